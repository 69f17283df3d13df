"""Poll for a condition with a deadline (tests never sleep to wait for things).

wait_until goes on through a check that raises (the last error is reported on timeout);
wait_for fails at once if its check raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Call `check` until it returns something truthy; return that, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - report the last failure if time runs out
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{detail}")
        time.sleep(interval_s)


def wait_for(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    """Call `condition` every 20 ms until it returns something truthy; return that, or fail after
    `timeout_s`. An exception from `condition` is not caught: it fails the test there and then."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


async def wait_until_async(
    check: Callable[[], Awaitable[T]], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """wait_until for a coroutine check (a request to an in-process app): the loop runs between polls."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
