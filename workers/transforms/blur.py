"""face-blur's last stage: the image with every face found blurred, as a JPEG file of the output.

`blur_faces` (needs: [decode, faces]) takes the decoded image (face-detect's `decode`: upright
RGB, the original's size up to its `max_side`) and the cascade's result (boxes in the
original's pixels), blurs each box grown by `padding` of its size on every side, and gives
the cascade's result with the JPEG added as a file (shared/files.py):

    {"faces": [...], "boxes": [...], "size": [width, height],
     "files": [{"name": "blurred.jpg", "content_type": "image/jpeg", "size": ..., "url": ...}]}

(the worker turns the OutputFile into its description). `size` is the JPEG's: the original's,
or smaller when the original's longer side is over decode's `max_side`.

The blur is strong enough to anonymise, not a soft focus: each region is averaged down to
`cells` blocks across its longer side (Pillow's BOX filter), scaled back up (bilinear), then
Gaussian-blurred by half a block, so at most cells x cells colours survive of a face, with
no block edges to read. Pixels outside the padded boxes are left as they are.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from shared.errors import ItemError
from shared.files import OutputFile
from shared.video import frame_key
from workers.transforms.faces import decoded_image

PADDING = 0.15  # of the box's width (height) added left and right (above and below)
CELLS = 8  # blocks across a blurred region's longer side
QUALITY = 90  # of the JPEG
FILE_NAME = "blurred.jpg"


def padded_box(
    box: Any, width: int, height: int, padding: float = PADDING
) -> tuple[int, int, int, int] | None:
    """[x1, y1, x2, y2] (pixel edges, floats) grown by `padding` of its size on each side, out to
    whole pixels, clipped to the image; None if nothing of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise ItemError(f"a face box must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, got {list(box)}")
    dx, dy = (x2 - x1) * padding, (y2 - y1) * padding
    left, top = max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy)))
    right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def blur_region(region: Image.Image, cells: int = CELLS) -> Image.Image:
    """A region averaged down to `cells` blocks across its longer side, back up, softened."""
    width, height = region.size
    ratio = cells / max(width, height)
    small = region.resize((max(1, round(width * ratio)), max(1, round(height * ratio))), Image.Resampling.BOX)
    radius = max(1.0, max(width, height) / cells / 2)
    return small.resize((width, height), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(radius))


def blur_boxes(image: np.ndarray, boxes: Any, padding: float = PADDING, cells: int = CELLS) -> np.ndarray:
    """A copy of `image` (uint8 H x W x 3) with each box (image pixels) blurred, padded."""
    if not 0.0 <= padding <= 1.0:
        raise ValueError(f"padding must be between 0 and 1, got {padding}")
    if cells < 1:
        raise ValueError(f"cells must be at least 1, got {cells}")
    height, width = image.shape[:2]
    img = Image.fromarray(image)
    for box in boxes:
        where = padded_box(box, width, height, padding)
        if where is not None:
            img.paste(blur_region(img.crop(where), cells), where[:2])
    return np.array(img, dtype=np.uint8)


def jpeg(image: np.ndarray, quality: int = QUALITY) -> bytes:
    """The image as a baseline JPEG of this quality (1-95)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"quality must be between 1 and 95, got {quality}")
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality)
    return out.getvalue()


def blur_faces(
    decoded: dict,
    found: dict,
    padding: float = PADDING,
    cells: int = CELLS,
    quality: int = QUALITY,
    name: str = FILE_NAME,
) -> dict[str, Any]:
    """The cascade's result (`faces` stage) with the decoded image, its faces blurred, as the
    JPEG file `name`, and the JPEG's `size`. A video's frame may name its file by its time:
    `{t}` in `name` becomes the frame's key ("frame-{t}.jpg": "frame-2.500.jpg")."""
    image = decoded_image(decoded)
    if "{t}" in name:
        if not isinstance(decoded.get("t"), (int, float)):
            raise ItemError(f"file name {name!r} wants the frame's time, and the image is not a video frame")
        name = name.replace("{t}", frame_key(float(decoded["t"])))
    boxes = found.get("boxes") if isinstance(found, dict) else None
    if not isinstance(boxes, list):
        raise ItemError("expected the faces stage's result ({'faces': [...], 'boxes': [...]})")
    sx, sy = (float(v) for v in decoded.get("scale", (1.0, 1.0)))
    scaled = [[b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy] for b in boxes]  # original -> decoded pixels
    blurred = blur_boxes(image, scaled, padding, cells)
    height, width = blurred.shape[:2]
    return {
        **found,
        "size": [width, height],
        "files": [OutputFile(name, jpeg(blurred, quality), "image/jpeg")],
    }
