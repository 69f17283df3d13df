"""MiniLM with the real weights on items of several texts (image-tag's), and its vector cache (CPU).

An item of n texts must give the n vectors those texts give one by one (text-embed's path),
whatever else shares the batch and whether the vectors were computed or came from the cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from workers.inference import to_device
from workers.models.minilm import HIDDEN, MiniLM
from workers.transforms.tagging import DEFAULT_TAXONOMY, label_text
from workers.transforms.text import tokenize, tokenize_texts

LABELS = [
    "a photo of a tiger cat, an Egyptian cat or a tabby",
    "a photo of a moped",
    "a photo of an espresso",
]
TAXONOMY = [f"a photo of {t}" for t in DEFAULT_TAXONOMY]


def load(cache_size: int) -> MiniLM:
    model = MiniLM(cache_size=cache_size)
    model.load(torch.device("cpu"))
    return model


@pytest.fixture(scope="module")
def plain() -> MiniLM:
    return load(cache_size=0)


@pytest.fixture(scope="module")
def singles(plain: MiniLM) -> dict[str, np.ndarray]:
    """Every text embedded alone, one per batch, without the cache: the reference."""
    out = {}
    for text in LABELS + TAXONOMY:
        with torch.inference_mode():
            (out[text],) = plain.split(plain.predict(plain.collate([tokenize({"text": text})])))
    return out


def embed(model: MiniLM, values: list[Any]) -> list[np.ndarray]:
    with torch.inference_mode():
        batch = to_device(model.collate(values), torch.device("cpu"))  # as the model worker moves it
        return model.split(model.predict(batch))


def test_an_item_of_n_texts_gives_the_n_single_text_embeddings(
    plain: MiniLM, singles: dict[str, np.ndarray]
) -> None:
    items = [tokenize_texts([label, *TAXONOMY]) for label in LABELS]
    out = embed(plain, [*items, tokenize({"text": LABELS[0]})])  # image-tag and text-embed items together
    assert [o.shape for o in out] == [(1 + len(TAXONOMY), HIDDEN)] * 3 + [(HIDDEN,)]
    for label, vectors in zip(LABELS, out, strict=False):
        expected = np.stack([singles[t] for t in [label, *TAXONOMY]])
        np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[3], singles[LABELS[0]], atol=1e-5, rtol=0)
    # ...and the rows are different texts, in order.
    assert len({round(float(v[0]), 6) for v in out[0]}) == 1 + len(TAXONOMY)


def test_the_label_text_stage_output_embeds_to_the_same_vectors(
    plain: MiniLM, singles: dict[str, np.ndarray]
) -> None:
    labels = {"labels": [{"label": "moped", "score": 0.9}]}
    (vectors,) = embed(plain, [label_text(labels)])
    expected = np.stack([singles[t] for t in ["a photo of a moped", *TAXONOMY]])
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)


def test_cached_rows_give_the_same_embeddings_and_are_not_computed_again(
    singles: dict[str, np.ndarray],
) -> None:
    model = load(cache_size=64)
    first = embed(model, [tokenize_texts([LABELS[0], *TAXONOMY])])[0]
    assert model.computed_rows == 1 + len(TAXONOMY) and model.cache_hits == 0
    # The taxonomy's rows now come from the cache; only the two new label texts run.
    second = embed(model, [tokenize_texts([label, *TAXONOMY]) for label in LABELS[1:]])
    assert model.computed_rows == 3 + len(TAXONOMY) and model.cache_hits == len(TAXONOMY)
    for label, vectors in zip(LABELS[1:], second, strict=True):
        expected = np.stack([singles[t] for t in [label, *TAXONOMY]])
        np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(vectors[1:], first[1:])
    # Everything cached: the network does not run at all, and the result is the same.
    (again,) = embed(model, [tokenize_texts([LABELS[0], *TAXONOMY])])
    assert model.computed_rows == 3 + len(TAXONOMY)
    np.testing.assert_array_equal(again, first)
    (alone,) = embed(model, [tokenize({"text": LABELS[1]})])  # a text-embed item hits the cache too
    np.testing.assert_array_equal(alone, second[0][0])
