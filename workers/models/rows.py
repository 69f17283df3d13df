"""Items of several rows each, run as one batch: the bookkeeping every such model shares.

The model worker batches items; some models batch something finer. MiniLM runs an item's
texts as rows of one padded batch (workers/models/rowcache.py); a cascade's R-Net and O-Net
run an item's crops, a different number per item (none, too); P-Net runs an item's pyramid
levels. Each flattens the batch's items into rows in collate(), runs the rows, and hands each
item its own back in split(): `Rows` remembers how many rows each item had and regroups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Rows:
    """How a batch's items map onto consecutive rows: item i holds counts[i] rows, or, where
    counts[i] is None, exactly one row that is the item's value itself (not a group of one)."""

    counts: tuple[int | None, ...]

    @property
    def total(self) -> int:
        return sum(1 if n is None else n for n in self.counts)

    def regroup(self, rows: Sequence[Any] | np.ndarray) -> list[Any]:
        """One value per item from `total` rows in order: a row, or a slice of n rows (n may be 0)."""
        if len(rows) != self.total:
            raise RuntimeError(f"got {len(rows)} rows for items holding {self.total}")
        out: list[Any] = []
        at = 0
        for n in self.counts:
            out.append(rows[at] if n is None else rows[at : at + n])
            at += 1 if n is None else n
        return out


def concat_rows(values: list[np.ndarray], row_shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, Rows]:
    """Every item's rows ([k_i, *row_shape] each, k_i >= 0) as one array [sum k_i, *row_shape].

    ValueError names the first item whose rows have another shape or dtype.
    """
    for i, value in enumerate(values):
        if not isinstance(value, np.ndarray) or value.ndim != 1 + len(row_shape):
            got = getattr(value, "shape", type(value).__name__)
            raise ValueError(
                f"item {i}: expected rows of shape [k, {', '.join(map(str, row_shape))}], got {got}"
            )
        if value.shape[1:] != row_shape or value.dtype != np.dtype(dtype):
            raise ValueError(
                f"item {i}: rows of shape {value.shape[1:]} {value.dtype}, expected {row_shape} {np.dtype(dtype)}"
            )
    rows = Rows(tuple(len(v) for v in values))
    if not values:
        return np.zeros((0, *row_shape), dtype=dtype), rows
    return np.concatenate(values), rows
