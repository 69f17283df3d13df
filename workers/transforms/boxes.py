"""Box geometry for a detection cascade, in numpy: NMS, box regression, squaring, crops.

Boxes are float arrays [N, 4] (x1, y1, x2, y2) in pixels, with a score alongside where one
is needed ([N, 5]: the score in column 4). The conventions are the MTCNN reference code's
(Zhang et al.'s MATLAB, and the davidsandberg/facenet port that facenet-pytorch follows):
widths count both edges (x2 - x1 + 1) in NMS and in R-Net's and O-Net's box regression.
Written here because torchvision, whose `nms` the reference uses, does not import beside this
project's torch; nothing here imports torch (these run in the preprocess workers).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

NMS_MODES = ("union", "min")


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: the indices of the boxes kept, best score first.

    The best box is kept and every box overlapping it by more than `threshold` is dropped,
    then again with the best of the rest. Overlap is intersection over union (`union`) or
    over the smaller box's area (`min`: what MTCNN uses last, so a box inside a bigger one
    goes). Ties in score keep the earlier box first.
    """
    if mode not in NMS_MODES:
        raise ValueError(f"mode must be one of {NMS_MODES}, got {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        overlap = inter / np.maximum(denom, 1e-12)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def grouped_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, mode: str = "union"
) -> np.ndarray:
    """NMS within each group (a pyramid level, say) on its own: the indices kept, in index order."""
    groups = np.asarray(groups)
    kept = [
        np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], threshold, mode)]
        for g in np.unique(groups)
    ]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Boxes moved by a network's regression: each edge by its offset times the box's width or
    height (x2 - x1 + 1 when `inclusive`, as R-Net and O-Net were trained; x2 - x1 for P-Net)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    extra = 1.0 if inclusive else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes[:, :4] + offsets[:, :4] * np.stack([w, h, w, h], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box made a square of its longer side, on the same centre (the next net's crop is square)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop_resized(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """A `size` x `size` uint8 crop of `image` (H x W x 3) per box: uint8 [N, size, size, 3].

    A box is whole pixels (x0, y0, x1, y1): columns x0 to x1 - 1, rows y0 to y1 - 1. The part
    of it outside the image is black (the reference's zero padding, which the nets were
    trained with), and the crop is resized with an area filter (Pillow's BOX, like the
    reference's INTER_AREA). An empty box gives a black crop.
    """
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    height, width = image.shape[:2]
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.int64).reshape(-1, 4)):
        bw, bh = int(x1 - x0), int(y1 - y0)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if bw < 1 or bh < 1 or ix1 <= ix0 or iy1 <= iy0:
            continue  # empty, or wholly outside the image: all black
        if (ix0, iy0, ix1, iy1) == (x0, y0, x1, y1):
            patch = image[y0:y1, x0:x1]
        else:
            patch = np.zeros((bh, bw, 3), dtype=np.uint8)
            patch[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = image[iy0:iy1, ix0:ix1]
        out[i] = np.asarray(
            Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.Resampling.BOX)
        )
    return out
