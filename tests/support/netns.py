"""Test hosts of their own: two network namespaces joined by one veth pair (needs root).

    with two_hosts() as (a, b):          # dlpipe-test-<random>-a and -b
        a.popen(["redis-server", ...], log=tmp / "redis.log")
        with a.entered():                # this thread's sockets now live on host A
            httpx.get(f"http://{a.addr}:8000/readyz")
        b.link(up=False)                 # host B loses its network

Addresses come from TEST-NET-1 (RFC 5737, documentation only): host A is 192.0.2.1/30 and host B
192.0.2.2/30, on the veth pair alone. Both ends are made inside the namespaces (`ip link add ...
netns`), nothing is added to the root namespace, and neither namespace gets a default route: the
traffic never leaves the pair. Each namespace has its own loopback, ports and routes; the file
system, the process ids and the host name stay shared (`socket.gethostname()` is the same on both).

On leaving, always, failure or not: every process started here is killed (its process group, then
anything else still in the namespace), then both namespaces are deleted (the veth pair with them).
`unavailable()` says why this machine cannot make them (not root, no `ip`, no netns support).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ADDR_A = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never routed anywhere
ADDR_B = "192.0.2.2"
PREFIX = 30
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can): checked by making one and deleting it."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"dlpipe-test-{secrets.token_hex(3)}-probe"
    try:
        _run("ip", "netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` fails here: {exc}"
    with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
        _run("ip", "netns", "del", probe)
    return None


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Host:
    """One namespace: its name, its end of the veth pair, its address, the processes run in it."""

    ns: str
    ifname: str
    addr: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ip(self, *args: str) -> str:
        return _run("ip", "-n", self.ns, *args)

    def popen(
        self, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """`argv` inside this namespace (`ip netns exec` execs it: the Popen is the process itself),
        in a process group of its own, stdout and stderr to `log`; killed when the hosts go."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def link(self, *, up: bool) -> None:
        """Bring this host's end of the pair up or down (down: its route to the other goes too)."""
        self.ip("link", "set", self.ifname, "up" if up else "down")

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in this namespace while inside (sockets made meanwhile stay on this host,
        whichever thread uses them later); back in its own namespace after."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(f"/run/netns/{self.ns}")
            try:
                yield
            finally:
                if _libc.setns(back, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the test's own namespace failed")
        finally:
            os.close(back)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM each process (itself only, as a container runtime does: a pool parent forwards it
        to its children), SIGKILL its process group if it is still there after `grace_s`, then
        anything else still in the namespace."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what it left behind, or itself
            proc.wait(timeout=10)
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            for pid in _run("ip", "netns", "pids", self.ns).split():
                if int(pid) != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Hosts A and B (see the module docstring); torn down on leaving, whatever happened."""
    tag = secrets.token_hex(3)
    a = Host(f"dlpipe-test-{tag}-a", f"dlp{tag}a", ADDR_A)
    b = Host(f"dlpipe-test-{tag}-b", f"dlp{tag}b", ADDR_B)
    made: list[Host] = []
    try:
        for host in (a, b):
            _run("ip", "netns", "add", host.ns)
            made.append(host)
        _run(
            "ip",
            "link",
            "add",
            a.ifname,
            "netns",
            a.ns,
            "type",
            "veth",
            "peer",
            "name",
            b.ifname,
            "netns",
            b.ns,
        )
        for host in (a, b):
            host.ip("addr", "add", f"{host.addr}/{PREFIX}", "dev", host.ifname)
            host.ip("link", "set", "lo", "up")
            host.link(up=True)
            routes = host.ip("route", "show").strip().splitlines()
            assert all(r.startswith(f"192.0.2.0/{PREFIX} dev {host.ifname} ") for r in routes), routes
        yield a, b
    finally:
        for host in reversed(made):  # B's clients first, then A's servers they would wait for
            host.stop()
        for host in made:
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                _run("ip", "netns", "del", host.ns)
