"""MiniLM.collate/split with several texts per item and the vector cache, without weights.

predict() is stood in for by one fake vector per computed row (its first token id), so the
tests see exactly which rows were computed and where each vector went.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from workers.models.minilm import HIDDEN, MiniLM


def row(*ids: int) -> np.ndarray:
    return np.array([101, *ids, 102], dtype=np.int32)


def single(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def multi(*rows: np.ndarray) -> dict[str, np.ndarray]:
    length = max(r.size for r in rows)
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        ids[i, : r.size], mask[i, : r.size] = r, 1
    return {"input_ids": ids, "attention_mask": mask}


def fake_predict(batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    """A vector per computed row that names the row: [second token id, row length, 0...]."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    vectors = torch.zeros((ids.shape[0], HIDDEN))
    if ids.shape[0]:  # else every row came from the cache
        vectors[:, 0] = ids[:, 1].float()
        vectors[:, 1] = mask.sum(dim=1).float()
    return vectors, batch["plan"]


def run(model: MiniLM, values: list[Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
    batch = model.collate(values)
    return batch, model.split(fake_predict(batch))


def names(vectors: np.ndarray) -> list[int]:
    return [int(v) for v in np.atleast_2d(vectors)[:, 0]]


def test_rows_of_all_items_make_one_padded_batch_and_split_regroups_them() -> None:
    model = MiniLM(cache_size=0)
    values = [multi(row(7, 8, 9), row(5)), single(row(6)), multi(row(4), row(3, 3), row(2))]
    batch, out = run(model, values)
    assert batch["input_ids"].shape == (6, 5)
    assert batch["attention_mask"].sum().item() == 5 + 3 + 3 + 3 + 4 + 3
    assert [o.shape for o in out] == [(2, HIDDEN), (HIDDEN,), (3, HIDDEN)]
    assert [names(o) for o in out] == [[7, 5], [6], [4, 3, 2]]
    assert [int(v) for v in out[0][:, 1]] == [5, 3]  # each row kept its own length
    assert all(o.dtype == np.float32 for o in out)


def test_a_text_repeated_in_a_batch_is_computed_once() -> None:
    model = MiniLM(cache_size=0)
    batch, out = run(model, [multi(row(1), row(9)), multi(row(2), row(9)), single(row(9))])
    assert batch["input_ids"].shape[0] == 3  # 1, 2 and 9
    assert [names(o) for o in out] == [[1, 9], [2, 9], [9]]


def test_single_text_items_are_unchanged_by_the_plan() -> None:
    model = MiniLM(cache_size=0)
    values = [single(row(1, 2)), single(row(3))]
    batch = model.collate(values)
    assert batch["input_ids"].tolist() == [[101, 1, 2, 102], [101, 3, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    out = model.split(fake_predict(batch))
    assert [o.shape for o in out] == [(HIDDEN,), (HIDDEN,)] and [names(o) for o in out] == [[1], [3]]


def test_seen_rows_come_from_the_cache_and_only_new_ones_are_computed() -> None:
    model = MiniLM(cache_size=100)
    taxonomy = [row(50), row(51), row(52)]
    _, first = run(model, [multi(row(1), *taxonomy)])
    assert model.computed_rows == 4 and model.cache_hits == 0 and len(model.cache) == 4
    batch, second = run(model, [multi(row(2), *taxonomy), multi(row(3), *taxonomy)])
    assert batch["input_ids"].shape[0] == 2  # only the two new label texts
    assert model.computed_rows == 6 and model.cache_hits == 3
    assert [names(o) for o in second] == [[2, 50, 51, 52], [3, 50, 51, 52]]
    np.testing.assert_array_equal(second[0][1:], first[0][1:])
    batch, third = run(model, [multi(row(1), *taxonomy)])  # every row cached: nothing to compute
    assert batch["input_ids"].shape[0] == 0 and model.computed_rows == 6
    np.testing.assert_array_equal(third[0], first[0])


def test_the_cache_keeps_the_most_recently_used_rows() -> None:
    model = MiniLM(cache_size=2)
    run(model, [single(row(1))])
    run(model, [single(row(2))])
    run(model, [single(row(1))])  # a hit: 1 is now the most recent
    run(model, [single(row(3))])  # evicts 2
    assert model.cache_hits == 1 and len(model.cache) == 2
    batch, _ = run(model, [single(row(1)), single(row(2)), single(row(3))])
    assert batch["input_ids"][:, 1].tolist() == [2]  # 1 and 3 cached, 2 computed again


def test_cache_size_zero_computes_every_batch() -> None:
    model = MiniLM(cache_size=0)
    for _ in range(2):
        batch, _ = run(model, [single(row(1))])
        assert batch["input_ids"].shape[0] == 1
    assert len(model.cache) == 0 and model.cache_hits == 0
    with pytest.raises(ValueError, match="cache_size"):
        MiniLM(cache_size=-1)


def test_cached_vectors_cannot_be_changed_through_an_output() -> None:
    model = MiniLM()
    _, (first,) = run(model, [single(row(1))])
    first[:] = 0  # a caller scribbling on its result
    _, (again,) = run(model, [single(row(1))])
    assert model.cache_hits == 1 and names(again) == [1]


def test_split_refuses_a_predict_output_of_the_wrong_size() -> None:
    model = MiniLM()
    batch = model.collate([single(row(1)), single(row(2))])
    with pytest.raises(RuntimeError, match="rows"):
        model.split((torch.zeros((1, HIDDEN)), batch["plan"]))
    assert len(model.cache) == 0


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"input_ids": np.array([[101, 102, 0]]), "attention_mask": np.array([[1, 0, 1]])}, "1s then 0s"),
        (
            {"input_ids": np.array([[101, 102], [0, 0]]), "attention_mask": np.array([[1, 1], [0, 0]])},
            "no real",
        ),
        ({"input_ids": np.zeros((0, 3), np.int32), "attention_mask": np.zeros((0, 3), np.int32)}, "2-d"),
        ({"input_ids": np.ones((1, 2, 3), np.int32), "attention_mask": np.ones((1, 2, 3), np.int32)}, "2-d"),
        ({"input_ids": np.array([[101, 102]]), "attention_mask": np.array([[1, 2]])}, "1s then 0s"),
        (
            {"input_ids": np.full((2, 300), 7), "attention_mask": np.ones((2, 300), np.int64)},
            "max_seq_length",
        ),
    ],
    ids=["hole in the mask", "an empty row", "no rows", "3-d", "mask not 0/1", "too long"],
)
def test_collate_refuses_malformed_multi_text_items(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        MiniLM(max_seq_length=256).collate([value])
