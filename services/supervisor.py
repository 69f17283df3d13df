"""`dlpipe up`: the whole stack on one machine, as separate processes, supervised.

Without DLPIPE_REDIS_URL it starts an embedded redis-server (loopback only, AOF on, data in
`<data_dir>/redis-<api port>`); with it, it uses that Redis and starts none. Then it starts the
API and one of each worker as child processes, with the same command lines docker-compose.yml
runs (`dlpipe api`, `dlpipe worker preprocess`, ...), so `ps` shows what each one is.

A child that exits is logged with its exit code and restarted after a backoff (1 s doubling to
30 s; reset once it has stayed up a while). On SIGINT/SIGTERM/SIGHUP every child gets SIGTERM
(warm shutdown) and up to a grace period to exit, then SIGKILL; the embedded Redis is stopped
last, once no child can still be writing to it. A second signal during shutdown kills at once.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor
(which then stops the children in order), and on Linux each child is sent SIGTERM if the
supervisor itself dies (PR_SET_PDEATHSIG): a killed `dlpipe up` leaves no orphans behind.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from shared.embedded_redis import find_redis_server, free_port, redis_command, wait_for_redis
from shared.settings import Settings

log = logging.getLogger(__name__)

# The children `dlpipe up` runs, by name: `dlpipe <args>`. docker-compose.yml runs the same
# commands, one service each (tests/unit/test_deploy_files.py keeps the two in step).
CHILD_COMMANDS: dict[str, tuple[str, ...]] = {
    "api": ("api",),
    "preprocess": ("worker", "preprocess"),
    "model": ("worker", "model"),
    "notifier": ("worker", "notifier"),
}

BACKOFF_BASE_S = 1.0  # first restart after this long
BACKOFF_CAP_S = 30.0  # restarts never wait longer than this
STABLE_AFTER_S = 30.0  # a child up this long has its failure count reset
DEFAULT_GRACE_S = 30.0  # how long children get to finish their warm shutdown
REDIS_GRACE_S = 10.0  # how long the embedded Redis gets to flush its AOF and exit
POLL_INTERVAL_S = 0.25  # how often the supervisor reaps and restarts


def restart_delay(failures: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before restarting a child that has exited `failures` times in a row."""
    if failures <= 0:
        return 0.0
    return min(cap_s, base_s * 2 ** min(failures - 1, 62))


def dlpipe_argv(args: Sequence[str]) -> list[str]:
    """The command line of `dlpipe <args>`: the console script beside this Python, else `-m services.cli`."""
    script = Path(sys.executable).parent / "dlpipe"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    return [sys.executable, "-m", "services.cli", *args]


def redact_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


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
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row, each within STABLE_AFTER_S of its start
    restart_at: float | None = None  # when a dead child is due to be started again
    restarts: int = 0

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


def _kill_group(pid: int) -> bool:
    """SIGKILL what is left of a child's process group; True if something was there."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(proc: subprocess.Popen) -> int:
    """Reap an exited child, first killing anything it left behind in its process group."""
    if proc.returncode is None:
        _kill_group(proc.pid)  # the leader is a zombie until wait(): its group id is still ours
    return proc.wait()


class Supervisor:
    """Starts children, restarts the ones that exit (with backoff), and stops them all."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        stable_after_s: float = STABLE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        stdout: IO[str] | int | None = None,
        stderr: IO[str] | int | None = None,
    ) -> None:
        self.children = list(children)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_after_s = stable_after_s
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
                start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor only
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
        delay = restart_delay(child.failures, self.backoff_base_s, self.backoff_cap_s)
        child.restart_at = now + delay
        child.restarts += 1
        log.warning(
            "%s %s after %.1fs; restarting in %.1fs (failure %d in a row)",
            child.name, why, now - child.started_at, delay, child.failures,
        )  # fmt: skip

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
            code = _reap(child.proc)
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

    def stop(self, grace_s: float, force: threading.Event | None = None) -> None:
        """SIGTERM every child, wait up to `grace_s` for all to exit, then SIGKILL the rest."""
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
                    code = _reap(child.proc)
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
                    _kill_group(child.proc.pid)
                    child.proc.wait()
                    child.proc = None
                break
            waiter = force if force is not None else threading.Event()
            waiter.wait(min(0.05, remaining))

    def run(self, stop_event: threading.Event, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Start the children, supervise them until `stop_event` is set, then stop them."""
        self.start()
        try:
            while not stop_event.is_set():
                self.run_once()
                stop_event.wait(self.next_wakeup_s())
        finally:
            self.stop(grace_s)


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment of a child: ours, with every setting as DLPIPE_* and the Redis to use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(settings.worker_env())
    env["DLPIPE_REDIS_URL"] = redis_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"dlpipe up: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _lock_data_dir(path: Path) -> IO[bytes]:
    """Hold a lock on the embedded Redis's folder, so two `dlpipe up` never share one."""
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / "dlpipe-up.lock", "wb")  # noqa: SIM115 - held until `up` returns
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SystemExit(f"dlpipe up: another `dlpipe up` is using {path}") from None
    return handle


def _start_embedded_redis(data_dir: Path, supervisor_kwargs: dict) -> tuple[Supervisor, str]:
    """Start redis-server on a free loopback port with its data in `data_dir`; wait for PING."""
    binary = find_redis_server()
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between choosing and binding it
        port = free_port()
        child = Child("redis", redis_command(binary, port, data_dir.resolve()))
        redis_sup = Supervisor([child], **supervisor_kwargs)
        redis_sup.start()
        url = f"redis://127.0.0.1:{port}/0"
        try:
            wait_for_redis(url, timeout_s=15.0, proc=child.proc)
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
            redis_sup.stop(REDIS_GRACE_S)
            continue
        return redis_sup, url
    raise SystemExit(
        f"dlpipe up: embedded redis-server did not start ({last_error}); see {data_dir}/redis.log"
    )


def up(
    settings: Settings,
    commands: Mapping[str, Sequence[str]] | None = None,
    *,
    grace_s: float | None = None,
    stop_event: threading.Event | None = None,
    install_signal_handlers: bool = True,
    backoff_base_s: float = BACKOFF_BASE_S,
) -> int:
    """Run the stack until SIGINT/SIGTERM (or `stop_event`); return the exit status.

    `commands` maps child names to full command lines (default: CHILD_COMMANDS as `dlpipe ...`);
    the tests pass stand-ins.
    """
    if commands is None:
        commands = {name: dlpipe_argv(args) for name, args in CHILD_COMMANDS.items()}
    if grace_s is None:
        grace_s = float(getattr(settings, "shutdown_grace_s", DEFAULT_GRACE_S))
    stop = stop_event or threading.Event()
    force = threading.Event()
    previous: dict[int, object] = {}

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: killing the children now", name)
            force.set()
        else:
            log.info("%s: stopping (children get up to %.0fs to finish their work)", name, grace_s)
            stop.set()

    if install_signal_handlers:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: a closed terminal must not stop the stack
            previous[signum] = signal.signal(signum, on_signal)

    sup_kwargs = {"backoff_base_s": backoff_base_s}
    redis_sup: Supervisor | None = None
    lock: IO[bytes] | None = None
    sup: Supervisor | None = None
    try:
        _check_port_free(settings.host, settings.port)
        if settings.redis_url:
            redis_url = settings.redis_url
            log.info("Redis: %s (DLPIPE_REDIS_URL; no embedded server)", redact_url(redis_url))
        else:
            redis_dir = settings.data_dir / f"redis-{settings.port}"
            lock = _lock_data_dir(redis_dir)
            redis_sup, redis_url = _start_embedded_redis(redis_dir, sup_kwargs)
            log.info(
                "Redis: %s (embedded redis-server pid=%d, AOF on, data and redis.log in %s)",
                redis_url, redis_sup.children[0].pid, redis_dir.resolve(),
            )  # fmt: skip
        env = child_env(settings, redis_url)
        sup = Supervisor([Child(name, list(argv), env) for name, argv in commands.items()], **sup_kwargs)
        sup.start()
        base = f"http://{_display_host(settings.host)}:{settings.port}"
        log.info("API: %s  docs: %s/docs", base, base)
        while not stop.is_set():
            if redis_sup is not None:
                redis_sup.run_once()
            sup.run_once()
            wait = sup.next_wakeup_s()
            if redis_sup is not None:
                wait = min(wait, redis_sup.next_wakeup_s())
            stop.wait(wait)
    finally:
        if sup is not None:
            sup.stop(grace_s, force)  # children first: they may still write to Redis
        if redis_sup is not None:
            redis_sup.stop(REDIS_GRACE_S, force)  # Redis last
        if lock is not None:
            lock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    log.info("stopped")
    return 0
