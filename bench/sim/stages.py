"""The sim chain's CPU stage between its two models (no torch here: preprocess workers import it).

`crop_box(input, box)` decodes the original image again (it needs [input, A]: the JPEG, at a
reduced DCT scale whose short side stays >= `resize`), cuts out the box model A found
(fractions [x0, y0, x1, y1]) and resizes it to `size` x `size` for model B: the second decode of
a detect-then-classify chain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from shared.errors import ItemError
from workers.transforms.image import open_rgb


def crop_box(inp: dict[str, Any], box: Any, size: int = 224, resize: int = 448) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ItemError(f"box {x0, y0, x1, y1} is not inside the image")
    img = open_rgb(inp, resize)
    width, height = img.size
    region = (x0 * width, y0 * height, x1 * width, y1 * height)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=region)
    return np.array(out, dtype=np.uint8, order="C")
