"""The MTCNN cascade's model stages: items of many shapes, batched across jobs.

A detection cascade's model inputs come in many shapes: one P-Net item is a whole image
pyramid (every level a different size, and every image a different pyramid); an R-Net or
O-Net item is the crops of one image, as many as the stage before kept (none, too). The
model worker batches items; these classes batch what is inside them:

- `MtcnnPNet`: collate() flattens every level of every item of the batch and groups the
  levels by size; predict() runs each size as one forward pass (the levels of same-sized
  images, such as one video's frames, share passes) and keeps, on the device, only the
  cells whose face probability reaches `threshold`; split() gives each item its cells back.
  A fully convolutional net's levels cannot be padded to one size without changing the
  cells at their edges (P-Net's ceil-mode pooling), so sizes run apart, never padded.
- `MtcnnRNet`, `MtcnnONet`: collate() concatenates every item's crops into one tensor,
  predict() runs it once, split() cuts the rows back by count (workers/models/rows.py).

The networks and their weights are in workers/models/mtcnn.py; the CPU stages around them
(pyramid, boxes, NMS, crops) in workers/transforms/faces.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workers.models.base import Model
from workers.models.mtcnn import load_net, normalize
from workers.models.rows import Rows, concat_rows

log = logging.getLogger(__name__)

CELL_COLUMNS = 8  # P-Net's cells: level scale, x, y (cell), face probability, 4 box offsets
PNET_THRESHOLD = 0.6  # the MTCNN paper's and reference code's first-stage threshold


class _MtcnnModel(Model):
    net_name = ""

    def __init__(self, weights_path: str | None = None, **params: Any) -> None:
        """Subclasses name their params; any other is a TypeError (a typo fails at startup)."""
        super().__init__(weights_path=weights_path, **params)
        self.weights_path = weights_path
        self.net: torch.nn.Module | None = None

    def load(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.net = load_net(self.net_name, self.weights_path).to(self.device)
        n_params = sum(p.numel() for p in self.net.parameters())
        log.info("loaded MTCNN %s (%d params) on %s", self.net_name, n_params, self.device)

    def _net(self) -> torch.nn.Module:
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__}.predict() called before load()")
        return self.net


@dataclass(frozen=True)
class _Levels:
    """What split() needs to give P-Net's cells back: each item's level count (`rows`), each
    flat level's scale, and which flat levels each size group holds (in collate's order)."""

    rows: Rows
    scales: list[float]
    groups: list[list[int]]


class MtcnnPNet(_MtcnnModel):
    """P-Net over image pyramids: per item {"levels": [uint8 h_i x w_i x 3], "scales": [s_i]}
    in; per item float32 [K, 8] out, one row per cell with face probability >= `threshold`:
    (level scale, cell x, cell y, probability, dx1, dy1, dx2, dy2).

    Params: `threshold` (default 0.6), `weights_path` (default: facenet-pytorch's pnet.pt).
    """

    net_name = "pnet"

    def __init__(self, threshold: float = PNET_THRESHOLD, weights_path: str | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        super().__init__(weights_path=weights_path, threshold=threshold)
        self.threshold = threshold

    def collate(self, values: list[Any]) -> dict[str, Any]:
        levels: list[np.ndarray] = []
        scales: list[float] = []
        counts: list[int | None] = []
        for i, value in enumerate(values):
            item_levels, item_scales = _pyramid(i, value)
            levels += item_levels
            scales += item_scales
            counts.append(len(item_levels))
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, level in enumerate(levels):
            by_size.setdefault(level.shape, []).append(index)
        groups = list(by_size.values())
        images = {
            str(g): torch.from_numpy(np.stack([levels[i] for i in group])) for g, group in enumerate(groups)
        }
        return {"images": images, "levels": _Levels(Rows(tuple(counts)), scales, groups)}

    def predict(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], _Levels]:
        net, plan = self._net(), batch["levels"]
        cells: list[torch.Tensor] = [torch.zeros((0, CELL_COLUMNS))] * len(plan.scales)
        for g, group in enumerate(plan.groups):
            prob, offsets = net(normalize(batch["images"][str(g)]))
            hit = (prob >= self.threshold).nonzero()  # [k, 3]: image in the group, y, x
            image, y, x = hit.unbind(1)
            found = torch.cat(
                [x[:, None].float(), y[:, None].float(), prob[image, y, x][:, None], offsets[image, :, y, x]],
                dim=1,
            ).cpu()
            image = image.cpu()
            for j, flat in enumerate(group):
                mine = found[image == j]
                scale = torch.full((len(mine), 1), plan.scales[flat])
                cells[flat] = torch.cat([scale, mine], dim=1)
        return cells, plan

    def split(self, output: tuple[list[torch.Tensor], _Levels]) -> list[np.ndarray]:
        cells, plan = output
        per_item = plan.rows.regroup([c.numpy().astype(np.float32) for c in cells])
        return [
            np.concatenate(item) if item else np.zeros((0, CELL_COLUMNS), np.float32) for item in per_item
        ]


def _pyramid(i: int, value: Any) -> tuple[list[np.ndarray], list[float]]:
    """One P-Net item's levels and scales, checked (ValueError names the item)."""
    if not isinstance(value, dict) or not isinstance(value.get("levels"), list):
        raise ValueError(f"item {i}: expected a pyramid {{'levels': [...], 'scales': [...]}}")
    levels, scales = value["levels"], value.get("scales")
    if not isinstance(scales, list) or len(scales) != len(levels):
        raise ValueError(f"item {i}: a pyramid needs one scale per level")
    for level in levels:
        if not (
            isinstance(level, np.ndarray)
            and level.dtype == np.uint8
            and level.ndim == 3
            and level.shape[2] == 3
        ):
            raise ValueError(f"item {i}: pyramid levels must be uint8 H x W x 3 arrays")
        if min(level.shape[:2]) < 12:
            raise ValueError(
                f"item {i}: a pyramid level of {level.shape[1]}x{level.shape[0]} is under P-Net's 12x12"
            )
    return levels, [float(s) for s in scales]


class _CropModel(_MtcnnModel):
    """R-Net and O-Net: per item {"crops": uint8 [k, S, S, 3], ...} in (k may be 0); per item
    float32 [k, columns] out, one row per crop."""

    size = 0  # crop side
    columns = 0  # outputs per crop

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__(weights_path=weights_path)

    def collate(self, values: list[Any]) -> dict[str, Any]:
        crops = []
        for i, value in enumerate(values):
            if not isinstance(value, dict) or "crops" not in value:
                raise ValueError(
                    f"item {i}: expected {{'crops': uint8 [k, {self.size}, {self.size}, 3], ...}}"
                )
            crops.append(value["crops"])
        rows, counts = concat_rows(crops, (self.size, self.size, 3), np.uint8)
        return {"crops": torch.from_numpy(rows), "rows": counts}

    def predict(self, batch: dict[str, Any]) -> tuple[torch.Tensor, Rows]:
        net, crops = self._net(), batch["crops"]
        if len(crops) == 0:  # no item of the batch kept a candidate
            return torch.zeros((0, self.columns)), batch["rows"]
        outputs = net(normalize(crops))
        return torch.cat([outputs[0][:, None], *outputs[1:]], dim=1), batch["rows"]

    def split(self, output: tuple[torch.Tensor, Rows]) -> list[np.ndarray]:
        rows, counts = output
        return counts.regroup(rows.detach().to("cpu").numpy().astype(np.float32))


class MtcnnRNet(_CropModel):
    """R-Net on 24x24 crops: per crop (face probability, dx1, dy1, dx2, dy2).
    Params: `weights_path` (default: facenet-pytorch's rnet.pt)."""

    net_name = "rnet"
    size = 24
    columns = 5


class MtcnnONet(_CropModel):
    """O-Net on 48x48 crops: per crop (face probability, dx1, dy1, dx2, dy2, five landmark x,
    five landmark y; offsets and landmarks as fractions of the crop's box).
    Params: `weights_path` (default: facenet-pytorch's onet.pt)."""

    net_name = "onet"
    size = 48
    columns = 15
