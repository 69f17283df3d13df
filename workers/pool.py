"""A worker kind run as several processes: `dlpipe worker preprocess` (its concurrency) and
`dlpipe worker model` (its replicas on a CPU) each supervise N children,
`python -m <module> --child ...`, and restart one that dies.

The parent turns its first SIGTERM/SIGINT into one SIGTERM per child (warm shutdown for all;
children ignore SIGINT, which a terminal sends to the whole group); a second signal makes
everyone exit at once. A child whose parent is gone stops by itself (runtime.watch_parent).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from shared.settings import Settings
from workers import runtime

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


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
    children: list[subprocess.Popen[bytes]] = []

    def start(slot: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, *argv], env=child_env(settings))
        log.info("started %s process %d (slot %d)", name, proc.pid, slot)
        return proc

    def kill_children_now() -> None:  # second signal: the children exit at once on theirs
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    runtime.install_stop_signals(stop, on_second=kill_children_now)
    children.extend(start(slot) for slot in range(count))
    while not stop.wait(0.2):
        for slot, proc in enumerate(children):
            if proc.poll() is None:
                continue
            log.error("%s process %d exited with code %s; restarting it", name, proc.pid, proc.returncode)
            if stop.wait(RESTART_DELAY_S):
                break
            children[slot] = start(slot)
    log.info("stopping %d %s processes (warm shutdown)", len(children), name)
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = [proc.wait() for proc in children]
    log.info("%s processes exited: %s", name, codes)
    # -SIGTERM: a child still starting (its handler not yet installed) had nothing in hand.
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
