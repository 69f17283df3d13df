"""Job priorities (`high`, `normal`, `low`) and how a worker shares its slots among them.

A job's priority (`priority` on submit; `normal` by default) is kept in its record and decides
which stream its items go to at every stage: each stage (or model) has one stream per priority
(keys.stage_streams: `<stream>:high`, `<stream>`, `<stream>:low`; normal keeps the plain name).
Workers fill each batch high first, with a guaranteed share for the lower ones (`Share`), so a
low backlog never starves and a high job never waits behind it for more than the batch in hand.

`Share` is pure (no Redis, no clock): a weighted deficit round robin over the priorities.
Each batch of `count` slots adds `count * weight / sum(weights)` credit to every priority and
hands the slots to the priorities with the most credit (ties: the higher priority), which are
guaranteed that many (their quota). A priority with less waiting than its quota leaves the rest
to the others, higher first (the batch is filled whatever waits), and its credit starts again
from 0 (it does not bank a share it could not use); the slots a priority takes beyond its quota
cost it nothing (no one else wanted them). So, with every priority backlogged, the slots go
8:3:1 (WEIGHTS); with only one backlogged, it gets them all; and low gets at least 1 slot in 12
however much high waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class Priority(str, Enum):
    high = "high"
    normal = "normal"
    low = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 normal, 2 low: the order workers read in."""
        return ORDER.index(self)


ORDER: tuple[Priority, ...] = (Priority.high, Priority.normal, Priority.low)
DEFAULT = Priority.normal
# Entries a preprocess worker reads per stage per step, all priorities together (workers/preprocess.py):
# small, so a slow item holds few others back. services/keda.py sizes CPU pods by it.
CPU_READ_COUNT = 8
NAMES: tuple[str, ...] = tuple(p.value for p in ORDER)
WEIGHTS: tuple[int, ...] = (8, 3, 1)  # high : normal : low, of a worker's slots when all wait


def parse(value: str | bytes | None) -> Priority:
    """A stored priority (a job record's `priority`); absent or unknown: normal (older records)."""
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return Priority(text) if text else DEFAULT
    except ValueError:
        return DEFAULT


class Share:
    """The weighted share of a worker's slots among the priorities (see the module docstring).

    `plan(count)` gives each priority's quota of the next `count` slots; the caller takes up to
    its quota from each, then fills what is left high first, and tells `charge(quotas, taken)`
    what each got. `split(count, available)` does all three when what waits is known (the model
    worker's held entries). Counts are per priority, in ORDER.
    """

    def __init__(self, weights: Sequence[int] = WEIGHTS) -> None:
        if len(weights) != len(ORDER) or any(w < 1 for w in weights):
            raise ValueError(f"one weight >= 1 per priority ({', '.join(NAMES)}), got {list(weights)}")
        self.weights = tuple(weights)
        self.credit = [0.0] * len(ORDER)

    def plan(self, count: int) -> list[int]:
        """Each priority's quota of the next `count` slots (they add up to `count`)."""
        total = sum(self.weights)
        for i, weight in enumerate(self.weights):
            self.credit[i] += count * weight / total
        quotas = [0] * len(ORDER)
        for _ in range(count):
            best = max(range(len(ORDER)), key=lambda i: (self.credit[i] - quotas[i], -i))
            quotas[best] += 1
        return quotas

    def charge(self, quotas: Sequence[int], taken: Sequence[int]) -> None:
        """What each priority took of its quota: a priority that took less (nothing more waited)
        starts again from 0; slots taken beyond a quota are free."""
        for i, (quota, got) in enumerate(zip(quotas, taken, strict=True)):
            if got < quota:
                self.credit[i] = 0.0
            else:
                self.credit[i] -= quota

    def split(self, count: int, available: Sequence[int]) -> list[int]:
        """How many to take of each priority for a batch of up to `count`, when `available` (per
        priority) wait: quotas first, the rest high first; charged."""
        quotas = self.plan(count)
        taken = fill(quotas, available, count)
        self.charge(quotas, taken)
        return taken


def fill(quotas: Sequence[int], available: Sequence[int], count: int) -> list[int]:
    """Up to each quota of what is available, then the slots left to the others, high first."""
    taken = [min(q, a) for q, a in zip(quotas, available, strict=True)]
    left = count - sum(taken)
    for i, waiting in enumerate(available):
        extra = min(left, waiting - taken[i])
        if extra > 0:
            taken[i] += extra
            left -= extra
    return taken
