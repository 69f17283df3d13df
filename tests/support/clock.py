"""A clock the test moves by hand, for code that takes a `clock: Callable[[], float]`."""

from __future__ import annotations


class FakeClock:
    """Reads `now` (seconds); the test sets it, adds to it, or calls advance()."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
