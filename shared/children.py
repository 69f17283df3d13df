"""Supervised processes: start them, reap the ones that exit, restart those with a backoff, stop
them all with a grace period. The one supervisor: `dlpipe up` runs its processes with it
(services/supervisor.py, services/embedded.py), and so do the worker kinds that run as several
processes (workers/pool.py).

A child that exits is restarted after a backoff (1 s doubling to 30 s; reset once it has
stayed up a while). A crash loop is given up loudly: a child that exited MAX_FAILURES times in
a row, each soon after its start (about 3 minutes of tries), is not started again, and
`gave_up()` names it; `run()` then stops the others and returns, and so does `dlpipe up`, with
exit status 1, for its own supervisor (systemd, Compose, Kubernetes) to see. Stopping sends every child SIGTERM (warm shutdown) and waits up to a
grace period, then SIGKILLs what is left of each child's process group.

Each child runs in its own session (unless Child.own_session is False), so a Ctrl-C in the terminal reaches only the supervisor,
and on Linux each child is sent SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG).
An exited child is left unreaped until its process group has been killed, so neither its pid
nor its group id can be reused in between.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from shared.backoff import exponential_s

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0  # first restart after this long
BACKOFF_CAP_S = 30.0  # restarts never wait longer than this
STABLE_AFTER_S = 30.0  # a child up this long has its failure count reset
MAX_FAILURES = 10  # exits in a row (each within STABLE_AFTER_S of its start) before giving up
DEFAULT_GRACE_S = 30.0  # how long children get to finish their warm shutdown
POLL_INTERVAL_S = 0.25  # how often the supervisor reaps and restarts


def restart_delay(failures: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before restarting a child that has exited `failures` times in a row."""
    if failures <= 0:
        return 0.0
    return exponential_s(failures - 1, base_s, cap_s)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass
class Child:
    """One supervised process: what to run, and what happened to it so far."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # None: inherit the supervisor's environment
    # In a session (and process group) of its own, so a terminal's Ctrl-C reaches the supervisor
    # only; False: in the supervisor's group, so whoever kills that group kills the child too.
    own_session: bool = True
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row, each within STABLE_AFTER_S of its start
    restart_at: float | None = None  # when a dead child is due to be started again
    restarts: int = 0
    gave_up: bool = False  # a crash loop: MAX_FAILURES exits in a row; not started again

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def _exited(proc: subprocess.Popen) -> bool:
    """Has the process exited? Leaves it unreaped, so its pid (and process group) can't be reused yet."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere
        return proc.poll() is not None
    return info is not None


def _kill(child: Child) -> bool:
    """SIGKILL a child: what is left of its process group when it leads one, else the process
    itself; True if something was there."""
    assert child.proc is not None
    try:
        if child.own_session:
            os.killpg(child.proc.pid, signal.SIGKILL)
        else:
            child.proc.kill()
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(child: Child) -> int:
    """Reap an exited child, first killing anything it left behind in its process group."""
    assert child.proc is not None
    if child.proc.returncode is None and child.own_session:
        _kill(child)  # the leader is a zombie until wait(): its group id is still ours
    return child.proc.wait()


class Supervisor:
    """Starts children, restarts the ones that exit (with backoff), and stops them all."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        stable_after_s: float = STABLE_AFTER_S,
        max_failures: int = MAX_FAILURES,
        clock: Callable[[], float] = time.monotonic,
        stdout: IO[str] | int | None = None,
        stderr: IO[str] | int | None = None,
    ) -> None:
        self.children = list(children)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_after_s = stable_after_s
        self.max_failures = max_failures
        self.clock = clock
        self.stdout = stdout
        self.stderr = stderr

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def _spawn(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = self.clock()
        try:
            child.proc = subprocess.Popen(
                child.argv,
                env=child.env,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=self.stderr,
                start_new_session=child.own_session,
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 - the supervisor forks from one thread
            )
        except OSError as exc:
            child.proc = None
            self._schedule_restart(child, f"could not start: {exc}")
            return
        log.info("started %s pid=%d: %s", child.name, child.proc.pid, shlex.join(child.argv))

    def _schedule_restart(self, child: Child, why: str) -> None:
        now = self.clock()
        if now - child.started_at >= self.stable_after_s:
            child.failures = 0
        child.failures += 1
        child.restarts += 1
        if child.failures >= self.max_failures:
            child.restart_at = None
            child.gave_up = True
            log.error(
                "%s %s after %.1fs: %d exits in a row, each within %.0fs of its start; giving up on it "
                "(a crash loop: see its log above)",
                child.name,
                why,
                now - child.started_at,
                child.failures,
                self.stable_after_s,
            )
            return
        delay = restart_delay(child.failures, self.backoff_base_s, self.backoff_cap_s)
        child.restart_at = now + delay
        log.warning(
            "%s %s after %.1fs; restarting in %.1fs (failure %d in a row)",
            child.name,
            why,
            now - child.started_at,
            delay,
            child.failures,
        )

    def gave_up(self) -> list[Child]:
        """The children in a crash loop, not started again."""
        return [child for child in self.children if child.gave_up]

    def start(self) -> None:
        for child in self.children:
            if child.proc is None and child.restart_at is None:
                self._spawn(child)

    def run_once(self) -> None:
        """One supervision step: reap children that exited, restart those whose backoff is over."""
        for child in self.children:
            if child.proc is None:
                if child.restart_at is not None and self.clock() >= child.restart_at:
                    self._spawn(child)
                continue
            if not _exited(child.proc):
                continue
            pid = child.proc.pid
            code = _reap(child)
            child.proc = None
            self._schedule_restart(child, f"(pid {pid}) exited unexpectedly, {describe_exit(code)},")

    def next_wakeup_s(self, default_s: float = POLL_INTERVAL_S) -> float:
        """How long the loop may wait before the next step is due."""
        due = [c.restart_at for c in self.children if c.proc is None and c.restart_at is not None]
        if not due:
            return default_s
        return max(0.0, min(default_s, min(due) - self.clock()))

    def running(self) -> list[Child]:
        return [c for c in self.children if c.proc is not None and not _exited(c.proc)]

    def stop(self, grace_s: float, force: threading.Event | None = None) -> dict[str, int]:
        """SIGTERM every child, wait up to `grace_s` (or until `force` is set) for all to exit,
        then SIGKILL the rest. Returns each stopped child's exit status (negative: the signal)."""
        codes: dict[str, int] = {}
        for child in self.children:
            child.restart_at = None
        alive = [c for c in self.children if c.proc is not None]
        for child in alive:
            assert child.proc is not None
            if not _exited(child.proc):
                log.info("stopping %s pid=%d (SIGTERM)", child.name, child.proc.pid)
                try:
                    child.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        while alive:
            for child in list(alive):
                assert child.proc is not None
                if _exited(child.proc):
                    pid = child.proc.pid
                    code = codes[child.name] = _reap(child)
                    log.info("%s pid=%d stopped, %s", child.name, pid, describe_exit(code))
                    child.proc = None
                    alive.remove(child)
            if not alive:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (force is not None and force.is_set()):
                for child in alive:
                    assert child.proc is not None
                    log.warning(
                        "%s pid=%d still running after %.0fs: SIGKILL", child.name, child.proc.pid, grace_s
                    )
                    _kill(child)
                    codes[child.name] = child.proc.wait()
                    child.proc = None
                break
            waiter = force if force is not None else threading.Event()
            waiter.wait(min(0.05, remaining))
        return codes

    def signal_running(self, signum: int) -> None:
        """Send `signum` to every child still running."""
        for child in self.running():
            assert child.proc is not None
            try:
                child.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def run(self, stop_event: threading.Event, grace_s: float = DEFAULT_GRACE_S) -> dict[str, int]:
        """Start the children, supervise them until `stop_event` is set (or one is given up: a
        crash loop), then stop them; returns their exit statuses (Supervisor.stop)."""
        self.start()
        try:
            while not stop_event.is_set() and not self.gave_up():
                self.run_once()
                stop_event.wait(self.next_wakeup_s())
        finally:
            codes = self.stop(grace_s)
        return codes
