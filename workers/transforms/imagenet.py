"""ImageNet-1k postprocessing: class probabilities -> the top k labels as JSON-ready data.

The 1000 class names (workers/data/imagenet_classes.txt, one per line in index order)
are the first WordNet lemma of each ImageNet-1k synset, from the public lists in timm's
wheel. Two names repeat ("crane" 134/517, "maillot" 638/639); the index tells them apart.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from shared.errors import ItemError

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 class names, index order (read once, on first use)."""
    path = resources.files("workers").joinpath("data").joinpath("imagenet_classes.txt")
    text = path.read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != NUM_CLASSES:
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} names, expected {NUM_CLASSES}")
    return labels


def top_k_labels(probs: np.ndarray, k: int = 5) -> dict:
    """The k most probable classes, best first: {"labels": [{"index", "label", "score"}, ...]}."""
    probs = np.asarray(probs)
    if probs.shape != (NUM_CLASSES,):
        raise ItemError(f"expected {NUM_CLASSES} class probabilities, got an array of shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.number) or not np.all(np.isfinite(probs)):
        raise ItemError("class probabilities are not all finite numbers")
    if not 1 <= k <= NUM_CLASSES:
        raise ValueError(f"k must be between 1 and {NUM_CLASSES}, got {k}")
    labels = imagenet_labels()
    # Stable sort on the negated scores: ties keep index order, so results are deterministic.
    order = np.argsort(-probs.astype(np.float64), kind="stable")[:k]
    return {
        "labels": [
            {"index": int(i), "label": labels[i], "score": round(float(probs[i]), 6)} for i in order
        ]
    }
