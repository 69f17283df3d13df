"""A model's output as the item's JSON result: the final stage of a pipeline around an exported model.

An exported model (workers/models/exported.py) gives either its ranked labels, JSON already
(`softmax_top_k`), or its output tensors per item (`raw`: {"outputs": {name: array}}), which
travel between stages as arrays (workers' binary codec) and become JSON lists only here, once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import ItemError


def result(value: Any) -> Any:
    """`value` with every array turned into (nested) lists of numbers; ItemError if a number
    is not finite (JSON has no NaN or infinity)."""
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ItemError("the model's output holds NaN or infinite numbers")
        return value.tolist()
    if isinstance(value, dict):
        return {key: result(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [result(item) for item in value]
    return value
