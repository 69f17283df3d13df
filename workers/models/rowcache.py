"""Several texts per item, and a cache of their vectors: the row bookkeeping of MiniLM.

An item is {"input_ids", "attention_mask"}: one text (1-d) or several (2-d, one row per
text). `plan_rows` flattens a batch's items into the distinct rows the cache does not have,
with a `_Plan` saying where every row's vector will come from; `pad_rows` pads those rows
into one batch; `regroup` turns the computed vectors (and the cached ones) back into one
value per item (workers/models/rows.py's `Rows`, which every model with several rows per
item shares).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.models.bert import HIDDEN, PAD_ID, VOCAB_SIZE
from workers.models.rows import Rows


def _item_rows(i: int, value: Any, limit: int) -> tuple[list[np.ndarray], bool]:
    """One item's texts as token-id rows without padding, and whether it held several texts.

    An item is {"input_ids", "attention_mask"}: 1-d (one text) or 2-d [n, L] (n texts, each
    row padded at the end with mask 0). ValueError says what is wrong with it.
    """
    if not isinstance(value, dict) or "input_ids" not in value or "attention_mask" not in value:
        raise ValueError(f"item {i}: expected {{'input_ids', 'attention_mask'}}, got {type(value).__name__}")
    ids = np.asarray(value["input_ids"])
    mask = np.asarray(value["attention_mask"])
    if ids.ndim not in (1, 2) or ids.shape != mask.shape or ids.size == 0:
        raise ValueError(
            f"item {i}: input_ids {ids.shape} and attention_mask {mask.shape} must be equal 1-d (one text) "
            "or 2-d (one row per text)"
        )
    if not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(f"item {i}: token ids and mask must be integers, got {ids.dtype}, {mask.dtype}")
    if ids.min() < 0 or ids.max() >= VOCAB_SIZE:
        raise ValueError(f"item {i}: token ids outside the vocabulary [0, {VOCAB_SIZE})")
    multi = ids.ndim == 2
    ids2, mask2 = (ids, mask) if multi else (ids[None, :], mask[None, :])
    counts = (mask2 != 0).sum(axis=1)
    if not counts.all():
        raise ValueError(f"item {i}: attention_mask has no real token" + (" in a row" if multi else ""))
    if counts.max() > limit:
        raise ValueError(f"item {i}: {int(counts.max())} tokens, over max_seq_length {limit}")
    if not np.array_equal(mask2, np.arange(mask2.shape[1]) < counts[:, None]):
        raise ValueError(f"item {i}: attention_mask must be 1s then 0s (padding at the end of a row)")
    return [row[:n].astype(np.int64) for row, n in zip(ids2, counts, strict=True)], multi


@dataclass(frozen=True, eq=False)
class _Plan:
    """What split() needs to turn a batch's computed rows back into one value per item.

    collate() sends only the distinct rows the cache does not have to the network; `sources`
    says, for every row of every item in order, where its vector is: index m < M in the
    computed rows, or M + c in `cached`.
    """

    rows: list[int | None]  # per item: None for a single text (-> [384]), else its n texts (-> [n, 384])
    sources: np.ndarray  # int64, one per row of every item
    keys: list[bytes]  # the computed rows' cache keys, in order
    cached: np.ndarray  # float32 [C, 384]: the vectors the cache had


def plan_rows(
    items: list[tuple[list[np.ndarray], bool]], lookup: Callable[[bytes], np.ndarray | None]
) -> tuple[list[np.ndarray], _Plan]:
    """The distinct rows of `items` to compute (those `lookup` has no vector for), and the plan.

    A row's key is its token ids as int32 bytes; a row repeated within the batch is computed
    (or looked up) once.
    """
    new: dict[bytes, int] = {}  # key -> index among the computed rows
    hit: dict[bytes, int] = {}  # key -> index among the cached vectors
    computed: list[np.ndarray] = []
    cached: list[np.ndarray] = []
    where: list[tuple[bool, int]] = []  # per row: (computed?, index)
    for rows, _ in items:
        for row in rows:
            key = row.astype(np.int32).tobytes()
            if key in new:
                where.append((True, new[key]))
            elif key in hit:
                where.append((False, hit[key]))
            elif (vector := lookup(key)) is not None:
                hit[key] = len(cached)
                cached.append(vector)
                where.append((False, hit[key]))
            else:
                new[key] = len(computed)
                computed.append(row)
                where.append((True, new[key]))
    plan = _Plan(
        rows=[len(rows) if multi else None for rows, multi in items],
        sources=np.array([i if is_new else len(computed) + i for is_new, i in where], dtype=np.int64),
        keys=list(new),
        cached=np.stack(cached) if cached else np.zeros((0, HIDDEN), dtype=np.float32),
    )
    return computed, plan


def pad_rows(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows padded to the longest (id 0, mask 0): int64 input_ids and attention_mask [M, L]."""
    length = max((row.size for row in rows), default=1)
    input_ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
    attention_mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : row.size] = row
        attention_mask[i, : row.size] = 1
    return input_ids, attention_mask


def regroup(plan: _Plan, computed: np.ndarray) -> list[np.ndarray]:
    """One value per item from the computed vectors [M, 384] and the plan's cached ones:
    [384] for a single text, [n, 384] for n texts."""
    table = np.concatenate([computed, plan.cached]) if len(plan.cached) else computed
    return Rows(tuple(plan.rows)).regroup(table[plan.sources])
