"""image-tag's CPU stages: ImageNet labels -> a sentence -> the nearest entries of a taxonomy.

The chain (shared/pipelines.yaml): decode -> classify (EfficientNet-Lite0) -> labels
(top 5) -> `label_text` -> embed (MiniLM) -> `image_tags`.

`label_text` writes the top labels as one sentence ("a photo of a tiger cat, an Egyptian
cat or a tabby") and tokenizes it together with every taxonomy entry, written the same
way ("a photo of animal"), into one item of n = 1 + len(taxonomy) texts. MiniLM embeds
the n rows ([n, 384], unit length; it caches rows it has seen, so the taxonomy's rows
cost nothing after the first item). `image_tags` scores each entry by the cosine
similarity of its row with row 0 and returns the best `top_n`.

Both stages take the same `taxonomy` param (the pipelines file gives it once, with a YAML
anchor); `image_tags` checks the row count matches. Nothing here imports torch: these run
in the preprocess workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.errors import ItemError
from workers.transforms.text import tokenize_texts

DEFAULT_TAXONOMY: tuple[str, ...] = (
    "animal",
    "vehicle",
    "food and drink",
    "person",
    "plant",
    "building",
    "electronic device",
    "clothing",
    "furniture",
    "tool",
    "sport",
    "landscape",
)
DEFAULT_K = 3  # labels written into the sentence
DEFAULT_MIN_SCORE = 0.01  # labels below this probability are left out (the best one never is)
DEFAULT_TEMPLATE = "a photo of {}"  # for the label list and for each taxonomy entry
DEFAULT_TOP_N = 3
DEFAULT_MAX_LENGTH = 64  # tokens per text: a few labels or a taxonomy entry fit easily
EMBEDDING_DIM = 384


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _check_taxonomy(taxonomy: Sequence[str]) -> list[str]:
    if isinstance(taxonomy, str) or not taxonomy:
        raise ValueError(f"taxonomy must be a non-empty list of strings, got {taxonomy!r}")
    entries = list(taxonomy)
    if not all(isinstance(t, str) and t.strip() for t in entries):
        raise ValueError(f"taxonomy entries must be non-blank strings, got {entries!r}")
    if len(set(entries)) != len(entries):
        raise ValueError(f"taxonomy entries must be unique, got {entries!r}")
    return entries


def _labels(labels: Any) -> list[dict[str, Any]]:
    """The `labels` list of top_k_labels' output, checked."""
    rows = labels.get("labels") if isinstance(labels, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ItemError("expected the classifier's labels ({'labels': [{'label', 'score'}, ...]})")
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("label"), str) and row["label"].strip()):
            raise ItemError(f"a label entry has no label name: {row!r}")
        if not isinstance(row.get("score"), (int, float)):
            raise ItemError(f"a label entry has no numeric score: {row!r}")
    return rows


def describe_labels(
    labels: list[dict[str, Any]],
    k: int = DEFAULT_K,
    min_score: float = DEFAULT_MIN_SCORE,
    template: str = DEFAULT_TEMPLATE,
) -> str:
    """The best labels as a phrase: "a photo of a tiger cat, an Egyptian cat or a tabby".

    Takes the first `k` labels (best first) whose score is at least `min_score`; the first
    label always counts, however low its score.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if "{}" not in template:
        raise ValueError(f"template must hold '{{}}' where the labels go, got {template!r}")
    names = [row["label"] for i, row in enumerate(labels[:k]) if i == 0 or row["score"] >= min_score]
    listed = [_article(name) for name in names]
    phrase = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " or " + listed[-1]
    return template.format(phrase)


def label_text(
    labels: dict[str, Any],
    taxonomy: Sequence[str] = DEFAULT_TAXONOMY,
    k: int = DEFAULT_K,
    min_score: float = DEFAULT_MIN_SCORE,
    template: str = DEFAULT_TEMPLATE,
    max_length: int = DEFAULT_MAX_LENGTH,
    tokenizer_path: str | None = None,
) -> dict[str, np.ndarray]:
    """Preprocess stage: the label phrase, then each taxonomy entry, tokenized as one item.

    Returns {"input_ids": int32 [1 + len(taxonomy), L], "attention_mask": same}, padded.
    """
    entries = _check_taxonomy(taxonomy)
    texts = [describe_labels(_labels(labels), k, min_score, template)]
    texts += [template.format(entry.strip()) for entry in entries]
    return tokenize_texts(texts, max_length=max_length, tokenizer_path=tokenizer_path)


def score_tags(embeddings: np.ndarray, taxonomy: Sequence[str]) -> list[dict[str, Any]]:
    """Cosine similarity of row 0 with rows 1..n, one per taxonomy entry: every tag, best first.

    Ties keep taxonomy order, so the result is deterministic.
    """
    entries = _check_taxonomy(taxonomy)
    vectors = np.asarray(embeddings)
    if vectors.ndim != 2 or vectors.shape[1] != EMBEDDING_DIM:
        raise ItemError(f"expected embeddings of shape [n, {EMBEDDING_DIM}], got {vectors.shape}")
    if vectors.shape[0] != len(entries) + 1:
        raise ItemError(
            f"got {vectors.shape[0]} embeddings for the label text and {len(entries)} taxonomy entries "
            f"(expected {len(entries) + 1}): do the label_text and tags stages share one taxonomy?"
        )
    if not np.issubdtype(vectors.dtype, np.floating) or not np.all(np.isfinite(vectors)):
        raise ItemError("the embeddings are not all finite numbers")
    vectors = vectors.astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(norms > 0):
        raise ItemError("an embedding is all zeros")
    vectors /= norms[:, None]
    scores = vectors[1:] @ vectors[0]
    order = np.argsort(-scores, kind="stable")
    return [{"tag": entries[i], "score": round(float(scores[i]), 6)} for i in order]


def image_tags(
    embeddings: np.ndarray,
    labels: dict[str, Any],
    taxonomy: Sequence[str] = DEFAULT_TAXONOMY,
    top_n: int = DEFAULT_TOP_N,
) -> dict[str, Any]:
    """Final stage: {"tags": [{"tag", "score"}, ...] (best `top_n`), "labels": the classifier's}."""
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    tags = score_tags(embeddings, taxonomy)
    return {"tags": tags[:top_n], "labels": _labels(labels)}
