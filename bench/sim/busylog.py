"""What the simulated device did in a window, from its busy log (device.py): pure functions.

duty cycle = the time the device was busy inside [t0, t1] / (t1 - t0); per model, the batches
that started in the window, their items and mean size; and any overlap between intervals (the
lock makes it 0: the log proves it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Busy:
    start: float
    end: float
    model: str
    n: int
    pid: int


def read_log(path: Path) -> list[Busy]:
    """The intervals logged so far (a line being written, not yet whole, is left out)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5:
            out.append(Busy(float(parts[0]), float(parts[1]), parts[2], int(parts[3]), int(parts[4])))
    return out


def overlap_s(intervals: list[Busy]) -> float:
    """Total time two logged intervals were busy at once (0 for one device used right)."""
    total, last_end = 0.0, float("-inf")
    for busy in sorted(intervals, key=lambda b: b.start):
        total += max(0.0, min(last_end, busy.end) - busy.start)
        last_end = max(last_end, busy.end)
    return total


def window(intervals: list[Busy], t0: float, t1: float) -> dict[str, Any]:
    """Duty cycle and batches of the device in [t0, t1]."""
    if t1 <= t0:
        raise ValueError(f"an empty window: [{t0}, {t1}]")
    busy = sum(max(0.0, min(b.end, t1) - max(b.start, t0)) for b in intervals)
    models: dict[str, dict[str, float]] = defaultdict(lambda: {"batches": 0, "items": 0, "busy_s": 0.0})
    for b in intervals:
        if t0 <= b.start < t1:
            m = models[b.model]
            m["batches"] += 1
            m["items"] += b.n
            m["busy_s"] += b.end - b.start
    return {
        "duty_cycle": round(busy / (t1 - t0), 4),
        "overlap_s": round(overlap_s([b for b in intervals if b.end > t0 and b.start < t1]), 6),
        "models": {
            name: {
                "batches": int(m["batches"]),
                "items": int(m["items"]),
                "mean_batch_size": round(m["items"] / m["batches"], 3),
                "busy_s": round(m["busy_s"], 3),
            }
            for name, m in sorted(models.items())
        },
    }
