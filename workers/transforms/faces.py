"""face-detect's CPU stages: the MTCNN cascade around its three networks.

The chain (shared/pipelines.yaml):

    decode -> pyramid -> P-Net -> candidates -> crops24 (needs decode) -> R-Net -> refine
           -> crops48 (needs decode) -> O-Net -> faces

`decode_image` (`decode_frame` for a video's frames) gives the upright RGB image, scaled
down only if its longer side is over `max_side`; `pyramid` resizes it to every scale at
which a face of `min_face` pixels or more fills P-Net's 12x12 window; P-Net (on the model
worker) returns the cells over its threshold; `candidates` turns them into boxes, keeps the
best of overlapping ones (NMS within each level, then across levels), applies P-Net's box
regression and squares them; `crops` cuts each box out of the decoded image and resizes it
to the next net's input (24, then 48 pixels): the stage that needs the image and a model's
output both. `refine` keeps R-Net's faces, NMS, regression, squares; `faces` keeps O-Net's,
places the landmarks, NMS (overlap over the smaller box) and gives everything in the
original image's pixels.

Defaults are the MTCNN paper's (Zhang et al. 2016) as its reference code and facenet-pytorch
use them: thresholds 0.6 (P-Net, a param of the model: workers/models/faces.py) / 0.7 / 0.7,
a 20-pixel smallest face, a pyramid factor of 0.709, NMS thresholds 0.5 (within a level) /
0.7 / 0.7 (the last over the smaller box). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from shared.errors import ItemError
from shared.settings import Settings
from workers.transforms import image as image_module
from workers.transforms.boxes import crop_resized, grouped_nms, nms, regress, square
from workers.transforms.image import InputConfig, decode_fit, fit_within
from workers.transforms.video import frame_image

DEFAULT_MAX_SIDE = 1920
MIN_FACE = 20
FACTOR = 0.709
CELL = 12  # P-Net's window, in pixels of a level
STRIDE = 2  # P-Net's cells are this far apart, in pixels of a level
RNET_THRESHOLD = 0.7
ONET_THRESHOLD = 0.7


def configure(config: InputConfig | Settings | None) -> None:
    """Images are read as the image stages read them (URL fetches, the data root): one configuration."""
    image_module.configure(config)


def _decoded(img: Image.Image, original: tuple[int, int]) -> dict[str, Any]:
    width, height = img.size
    return {
        "image": np.array(img, dtype=np.uint8, order="C"),
        "scale": [original[0] / width, original[1] / height],  # original pixels per decoded pixel
        "size": [original[0], original[1]],
    }


def decode_image(inp: dict, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = 50_000_000) -> dict[str, Any]:
    """The input's image, upright RGB, its longer side at most `max_side` (scaled down if over):
    {"image": uint8 H x W x 3, "scale": [x, y] original pixels per pixel, "size": original [w, h]}."""
    img, original = decode_fit(inp, max_side, max_pixels)
    return _decoded(img, original)


def decode_frame(inp: dict, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = 50_000_000) -> dict[str, Any]:
    """A video item's frame (`frame_image`), as `decode_image` gives an image, with its time `t`."""
    img = frame_image(inp, max_pixels)
    return {**_decoded(fit_within(img, max_side), img.size), "t": float(inp["t"])}


def decoded_image(decoded: Any) -> np.ndarray:
    image = decoded.get("image") if isinstance(decoded, dict) else None
    if not (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    ):
        raise ItemError("expected the decoded image ({'image': uint8 H x W x 3, ...})")
    return image


def pyramid_scales(width: int, height: int, min_face: int = MIN_FACE, factor: float = FACTOR) -> list[float]:
    """The scales at which a face of `min_face` pixels or more fills P-Net's 12x12 window, down
    to the level whose shorter side is under 12 pixels: 12 / min_face, times `factor`, ..."""
    if min_face < CELL:
        raise ValueError(f"min_face must be at least {CELL} pixels, got {min_face}")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must be between 0 and 1, got {factor}")
    scale = CELL / min_face
    shortest = min(width, height) * scale
    scales = []
    while shortest >= CELL:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales


def pyramid(decoded: dict, min_face: int = MIN_FACE, factor: float = FACTOR) -> dict[str, Any]:
    """The image at every scale of `pyramid_scales`: {"levels": [uint8 h x w x 3], "scales": [float]}.

    A level is int(side * scale + 1) pixels a side, as in the reference, area-filtered (Pillow's
    BOX) from the level before it rather than from the image: a third of the time on a large
    image, for the same faces on the test photos.
    """
    image = decoded_image(decoded)
    height, width = image.shape[:2]
    img = Image.fromarray(image)
    levels, scales = [], pyramid_scales(width, height, min_face, factor)
    for scale in scales:
        img = img.resize((int(width * scale + 1), int(height * scale + 1)), Image.Resampling.BOX)
        levels.append(np.asarray(img))
    return {"levels": levels, "scales": scales}


def _rows(value: Any, columns: int, what: str) -> np.ndarray:
    rows = np.asarray(value, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise ItemError(f"expected {what} of shape [k, {columns}], got {rows.shape}")
    return rows


def _with_scores(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes, scores[:, None]], axis=1).astype(np.float32).reshape(-1, 5)


def candidates(cells: np.ndarray, nms_level: float = 0.5, nms_image: float = 0.7) -> np.ndarray:
    """P-Net's cells -> candidate boxes float32 [N, 5] (x1, y1, x2, y2, score), squared, in
    the decoded image's pixels (1-based, both edges in the box, as the reference's)."""
    cells = _rows(cells, 8, "P-Net cells")
    scale, x, y, score, offsets = cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3], cells[:, 4:8]
    boxes = np.stack(
        [
            np.floor((STRIDE * x + 1) / scale),
            np.floor((STRIDE * y + 1) / scale),
            np.floor((STRIDE * x + CELL) / scale),
            np.floor((STRIDE * y + CELL) / scale),
        ],
        axis=1,
    )
    keep = grouped_nms(boxes, score, scale, nms_level)
    boxes, score, offsets = boxes[keep], score[keep], offsets[keep]
    keep = nms(boxes, score, nms_image)
    boxes = square(regress(boxes[keep], offsets[keep], inclusive=False))
    return _with_scores(boxes, score[keep])


def crops(decoded: dict, boxes: np.ndarray, size: int) -> dict[str, Any]:
    """Each box cut from the decoded image and resized to `size` x `size` (black outside the
    image): {"crops": uint8 [N, size, size, 3], "boxes": the boxes, "scale", "size": the
    decoded image's}. The next net scores the crops; the stage after it reads the boxes."""
    image = decoded_image(decoded)
    boxes = _rows(boxes, 5, "boxes")
    whole = np.trunc(boxes[:, :4])
    pixels = np.stack([whole[:, 0] - 1, whole[:, 1] - 1, whole[:, 2], whole[:, 3]], axis=1)
    return {
        "crops": crop_resized(image, pixels, size),
        "boxes": boxes.astype(np.float32),
        "scale": decoded["scale"],
        "size": decoded["size"],
    }


def _check_threshold(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def refine(
    cropped: dict, scored: np.ndarray, threshold: float = RNET_THRESHOLD, nms_threshold: float = 0.7
) -> np.ndarray:
    """R-Net's scores of the 24x24 crops -> the boxes it takes for faces, float32 [M, 5]: over
    `threshold`, NMS, R-Net's regression, squared."""
    _check_threshold("threshold", threshold)
    boxes = _rows(cropped["boxes"], 5, "boxes")
    scored = _rows(scored, 5, "R-Net outputs")
    if len(scored) != len(boxes):
        raise ItemError(f"R-Net scored {len(scored)} crops of {len(boxes)}")
    keep = scored[:, 0] > threshold
    boxes, score, offsets = boxes[keep, :4], scored[keep, 0], scored[keep, 1:5]
    keep = nms(boxes, score, nms_threshold)
    return _with_scores(square(regress(boxes[keep], offsets[keep])), score[keep])


def faces(
    cropped: dict,
    scored: np.ndarray,
    threshold: float = ONET_THRESHOLD,
    nms_threshold: float = 0.7,
    decimals: int = 1,
) -> dict[str, Any]:
    """O-Net's outputs for the 48x48 crops -> the result, in the original image's pixels:

        {"faces": [{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x 5]}, ...],
         "boxes": [[x1, y1, x2, y2], ...]}

    best score first. Boxes are in pixel coordinates from the image's top-left corner (0, 0)
    to (width, height), clipped to the image; the landmarks are the eyes (left, right as seen),
    the nose and the mouth's corners, in the same coordinates.
    """
    _check_threshold("threshold", threshold)
    boxes = _rows(cropped["boxes"], 5, "boxes")[:, :4]
    scored = _rows(scored, 15, "O-Net outputs")
    if len(scored) != len(boxes):
        raise ItemError(f"O-Net scored {len(scored)} crops of {len(boxes)}")
    keep = scored[:, 0] > threshold
    boxes, score, offsets, marks = boxes[keep], scored[keep, 0], scored[keep, 1:5], scored[keep, 5:15]
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    xs = boxes[:, :1] - 1 + w[:, None] * marks[:, :5]
    ys = boxes[:, 1:2] - 1 + h[:, None] * marks[:, 5:]
    boxes = regress(boxes, offsets)
    keep = nms(boxes, score, nms_threshold, mode="min")
    sx, sy = (float(v) for v in cropped["scale"])
    width, height = (float(v) for v in cropped["size"])
    edges = np.stack([boxes[:, 0] - 1, boxes[:, 1] - 1, boxes[:, 2], boxes[:, 3]], axis=1) * [sx, sy, sx, sy]
    edges = np.clip(edges, 0.0, [width, height, width, height])
    found = []
    for i in keep:
        landmarks = [
            [round(float(x) * sx, decimals), round(float(y) * sy, decimals)]
            for x, y in zip(xs[i], ys[i], strict=True)
        ]
        box = [round(float(v), decimals) for v in edges[i]]
        found.append({"box": box, "score": round(float(score[i]), 4), "landmarks": landmarks})
    return {"faces": found, "boxes": [face["box"] for face in found]}
