"""`python -m tests.notifier_crash THREAD TRIGGER`: a real notifier (`workers.notifier.main`) one
of whose threads dies of an error once the file TRIGGER exists. THREAD: `events`,
`rq-scheduler` and `webhook-recovery` work normally until then, stop, and raise;
`rq-worker-0` takes no delivery and raises then (its sibling rq workers deliver). For
tests/integration/test_webhook_recovery.py: what the notifier does when a thread dies.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.settings import Settings
from tests.support.waiting import wait_until
from workers import notifier
from workers.webhooks import orphans, rqthreads

POLL_S = 0.05


class InjectedFailure(RuntimeError):
    pass


def until(trigger: Path, stop: threading.Event) -> None:
    """Return once `trigger` exists or `stop` is set."""
    wait_until(lambda: trigger.exists() or stop.is_set(), float("inf"), str(trigger), POLL_S)


def dies_on(trigger: Path, name: str, run: Callable[..., None]) -> Callable[..., None]:
    """`run(..., stop)` with its own stop, set by the trigger; then an error."""

    def dying(*args: Any) -> None:
        *rest, stop = args
        mine = threading.Event()
        watcher = threading.Thread(target=lambda: (until(trigger, stop), mine.set()), daemon=True)
        watcher.start()
        run(*rest, mine)
        if not stop.is_set():
            raise InjectedFailure(f"injected failure of thread {name}")

    return dying


def main(thread: str, trigger: Path) -> int:
    if thread == "events":
        notifier.Notifier.run = dies_on(trigger, thread, notifier.Notifier.run)  # type: ignore[method-assign]
    elif thread == "rq-scheduler":
        rqthreads.run_scheduler = dies_on(trigger, thread, rqthreads.run_scheduler)
    elif thread == "webhook-recovery":
        orphans.Recovery.run = dies_on(trigger, thread, orphans.Recovery.run)  # type: ignore[method-assign]
    elif thread == "rq-worker-0":
        real_worker = rqthreads.run_worker

        def run_worker(queue: Any, owner: str, n: int, stop: threading.Event) -> None:
            if n != 0:
                return real_worker(queue, owner, n, stop)
            until(trigger, stop)
            if not stop.is_set():
                raise InjectedFailure(f"injected failure of thread {thread}")

        rqthreads.run_worker = run_worker
    else:
        raise SystemExit(f"unknown thread {thread!r}")
    return notifier.main(Settings())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
