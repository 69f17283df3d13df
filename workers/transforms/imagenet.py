"""ImageNet-1k postprocessing: class probabilities -> the top k labels as JSON-ready data.

The 1000 class names (workers/data/imagenet_classes.txt, one per line in index order)
are the first WordNet lemma of each ImageNet-1k synset, from the public lists in timm's
wheel. Two names repeat ("crane" 134/517, "maillot" 638/639); the index tells them apart.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from workers.transforms.labels import ranked_labels

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
    return ranked_labels(probs, imagenet_labels(), k)
