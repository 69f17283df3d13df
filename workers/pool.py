"""A worker kind run as several processes: `dlpipe worker preprocess` (its concurrency) and
`dlpipe worker model` (its replicas on a CPU) each supervise N children,
`python -m <module> --child ...`, with the one supervisor (shared/children.py): one that dies is
restarted with a backoff (1 s doubling to 30 s, reset once it has stayed up a while), and a crash
loop is given up: the others are stopped and the parent exits 1.

The children stay in the parent's process group, so whoever kills that group (`dlpipe up`, or
Kubernetes) kills them too. The parent turns its first SIGTERM/SIGINT into one SIGTERM per child
(warm shutdown for all; children ignore SIGINT, which a terminal sends to the whole group) and
gives them DLPIPE_SHUTDOWN_GRACE_S to exit before it SIGKILLs them; a second signal makes everyone
exit at once. A child whose parent is gone stops by itself (SIGTERM from PR_SET_PDEATHSIG, and
runtime.watch_parent).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from shared.children import Child, Supervisor, describe_exit
from shared.settings import Settings
from workers import runtime

log = logging.getLogger(__name__)


def child_env(settings: Settings) -> dict[str, str]:
    """A child's environment: these settings, and one thread for the native libraries' pools
    (numpy's BLAS, OpenMP): N children use N cores, not N x cores."""
    return {**os.environ, **settings.worker_env(), **runtime.SINGLE_THREAD_ENV}


def prepare_child(stop: threading.Event) -> None:
    """In a child, at start: SIGTERM (from the parent, once) stops it warmly, SIGINT is ignored
    (the parent forwards a terminal's Ctrl-C as SIGTERM), and it stops if the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.install_stop_signals(stop, signals=(signal.SIGTERM,))
    runtime.watch_parent(stop, os.getppid())


def supervise(name: str, argv: list[str], count: int, settings: Settings) -> int:
    """Run `count` children `python ARGV` until SIGTERM/SIGINT; 0 if all exit cleanly."""
    stop = threading.Event()
    env = child_env(settings)
    children = [
        Child(f"{name}-{slot}", [sys.executable, *argv], env, own_session=False) for slot in range(count)
    ]
    supervisor = Supervisor(children)
    # second signal: the children exit at once on theirs (and this process with exit code 1)
    runtime.install_stop_signals(stop, on_second=lambda: supervisor.signal_running(signal.SIGTERM))
    codes = supervisor.run(stop, settings.shutdown_grace_s)
    log.info("%s processes exited: %s", name, {child: describe_exit(code) for child, code in codes.items()})
    if supervisor.gave_up():  # a crash loop (logged): this process exits 1 for its own supervisor
        return 1
    # -SIGTERM: a child still starting (its handler not yet installed) had nothing in hand.
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes.values()) else 1
