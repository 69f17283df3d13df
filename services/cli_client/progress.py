"""`dlpipe submit`'s progress bar (tqdm, on stderr when it is a terminal): inputs done and failed,
the rate and the time left."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.succeeded = 0
        self.failed = 0
        self._bar = tqdm(
            total=total,
            unit="input",
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
            disable=None if enabled else True,  # None: shown only on a terminal
        )

    def add(self, records: list[dict[str, Any]]) -> None:
        ok = sum(1 for r in records if r.get("status") == "succeeded")
        self.succeeded += ok
        self.failed += len(records) - ok
        self._bar.set_postfix_str(f"ok={self.succeeded} failed={self.failed}", refresh=False)
        self._bar.update(len(records))

    def unsent(self, count: int) -> None:
        self._bar.total = max(0, (self._bar.total or 0) - count)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
