"""Class probabilities -> the top k labels as JSON-ready data: one format for every classifier.

image-classify's ImageNet names (workers/transforms/imagenet.py) and an exported model's own
labels file (workers/models/exported.py) both rank with `ranked_labels`, so every classifier's
result reads the same: {"labels": [{"index", "label", "score"}, ...]}, best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.errors import ItemError


def read_labels(path: str | Path) -> tuple[str, ...]:
    """A labels file: one class name per line, in index order (blank lines are skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def ranked_labels(probs: np.ndarray, names: Sequence[str], k: int) -> dict:
    """The k most probable classes, best first: {"labels": [{"index", "label", "score"}, ...]}.

    Scores are rounded to 6 decimals; ties keep index order, so results are deterministic.
    ItemError if `probs` is not one finite number per name.
    """
    probs = np.asarray(probs)
    if probs.shape != (len(names),):
        raise ItemError(f"expected {len(names)} class probabilities, got an array of shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.number) or not np.all(np.isfinite(probs)):
        raise ItemError("class probabilities are not all finite numbers")
    if not 1 <= k <= len(names):
        raise ValueError(f"k must be between 1 and {len(names)}, got {k}")
    order = np.argsort(-probs.astype(np.float64), kind="stable")[:k]
    return {
        "labels": [{"index": int(i), "label": names[i], "score": round(float(probs[i]), 6)} for i in order]
    }
