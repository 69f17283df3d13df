"""Where the face is in the bundled astronaut photo (tests/support/photos.py), and how much of a
detected box lies in a region."""

from __future__ import annotations

# The astronaut's head is at about x 160-260, y 50-190 of the 512 x 512 photo (checked by eye).
HEAD = (160, 50, 260, 190)  # x1, y1, x2, y2 on the astronaut


def overlap(box: list[float], region: tuple[float, ...]) -> float:
    """The share of `box` that lies inside `region`."""
    w = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    h = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    return w * h / ((box[2] - box[0]) * (box[3] - box[1]))
