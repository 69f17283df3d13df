"""Stage functions for the graph-pipeline tests (no torch here: preprocess workers import this)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_pair(value: dict[str, Any]) -> np.ndarray:
    return np.array([value["v"], value["v"]], dtype=np.float32)


def plus_hundred(value: dict[str, Any]) -> int:
    return int(value["v"]) + 100


def chain_result(doubled: np.ndarray) -> dict[str, Any]:
    return {"doubled": float(doubled[0]), "batch": int(doubled[1])}


def join_result(doubled: np.ndarray, shifted: int, original: dict[str, Any]) -> dict[str, Any]:
    return {"doubled": float(doubled[0]), "batch": int(doubled[1]), "shifted": shifted, "v": original["v"]}
