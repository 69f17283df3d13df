"""Processes the bench starts: start in their own process group, wait until they answer, meter
their CPU time (the whole tree, psutil), and stop them by process id: SIGTERM to the group and
to every descendant seen, a grace period, then SIGKILL; then check their port is free again."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

log = logging.getLogger(__name__)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_port_free(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} is still in use {timeout_s:.0f}s after its server was stopped")
        time.sleep(0.2)


@dataclass
class Server:
    """A started process (and, through psutil, every process below it)."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """The process and its live descendants (remembered, so they can be stopped by pid)."""
        try:
            root = psutil.Process(self.proc.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            found = []
        for p in found:
            self.seen.setdefault(p.pid, p)
        return found

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own command lines
            list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    log.info("%s started: pid %d (%s)", name, proc.pid, " ".join(argv[:4]))
    return Server(name, proc, log_path)


def wait_until(server: Server, ready: Callable[[], bool], timeout_s: float) -> float:
    """Poll `ready` until true; seconds it took. Raises if the process exits or time runs out."""
    started = time.monotonic()
    while not ready():
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{server.name} not ready after {timeout_s:.0f}s:\n{server.log_tail()}")
        time.sleep(0.25)
        server.tree()  # remember children as they appear
    return time.monotonic() - started


def http_ok(url: str, method: str = "GET", body: bytes | None = None, timeout_s: float = 30.0) -> bool:
    try:
        response = httpx.request(
            method, url, content=body, timeout=timeout_s, headers={"Content-Type": "application/json"}
        )
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 202)


def stop(server: Server, grace_s: float = 30.0) -> None:
    """SIGTERM the process group and every process of the tree by pid; SIGKILL what is left."""
    procs = {p.pid: p for p in [*server.seen.values(), *server.tree()]}
    _signal_group(server.proc.pid, signal.SIGTERM)
    for p in procs.values():
        _signal(p, signal.SIGTERM)
    alive = _wait_gone(server, list(procs.values()), grace_s)
    if alive:
        log.warning(
            "%s: %d processes still up after %.0fs: SIGKILL %s",
            server.name,
            len(alive),
            grace_s,
            [p.pid for p in alive],
        )
        _signal_group(server.proc.pid, signal.SIGKILL)
        for p in alive:
            _signal(p, signal.SIGKILL)
        _wait_gone(server, alive, 10.0)
    try:
        server.proc.wait(timeout=5.0)  # reap it, whatever state the polling above saw it in
    except subprocess.TimeoutExpired:
        log.warning("%s: pid %d did not exit", server.name, server.proc.pid)
    log.info("%s stopped (exit %s)", server.name, server.proc.returncode)


def _wait_gone(server: Server, procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each process has exited (a zombie whose parent is gone counts as exited);
    the ones still running."""
    deadline = time.monotonic() + timeout_s
    while True:
        server.proc.poll()  # reap our own child
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:  # a group we made (start_new_session): its id is the leader's pid
            os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(p: psutil.Process, sig: signal.Signals) -> None:
    try:
        if p.is_running():  # also guards against a reused pid (create time is checked)
            p.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


# -- CPU time ---------------------------------------------------------------------------

CpuSnapshot = dict[int, tuple[str, float]]  # pid -> (role, user + system seconds so far)


def cpu_snapshot(procs: Sequence[psutil.Process], role: Callable[[psutil.Process], str]) -> CpuSnapshot:
    snap: CpuSnapshot = {}
    for p in procs:
        try:
            with p.oneshot():
                times = p.cpu_times()
                snap[p.pid] = (role(p), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return snap


def cpu_by_role(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU-seconds spent between the snapshots, summed per role (processes seen at the end;
    one born inside the window counts from 0)."""
    out: dict[str, float] = {}
    for pid, (role, total) in after.items():
        spent = total - before.get(pid, (role, 0.0))[1]
        out[role] = out.get(role, 0.0) + max(spent, 0.0)
    return out


def default_role(p: psutil.Process) -> str:
    """A process's name as ps shows it (e.g. python3.11, raylet, ServeReplica:...)."""
    try:
        return p.name()
    except psutil.Error:
        return "?"
