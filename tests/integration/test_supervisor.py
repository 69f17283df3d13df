"""`dlpipe up`'s supervisor with stand-in children: restarts, clean stop, the embedded Redis.

The children here are small `python -c` programs, so these tests don't depend on the API or
the workers. Waiting is done by polling with a deadline, never by sleeping a fixed time.
Every Redis these tests talk to is one they started (never 127.0.0.1:6379).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from services import cli
from services.supervisor import CHILD_COMMANDS
from shared import heartbeat
from shared.children import Child, Supervisor
from shared.embedded_redis import free_port
from tests.support.clock import FakeClock
from tests.support.upprocess import LOOP, PY, UpProcess, pid_gone
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


# --- the Supervisor class, in this process -------------------------------------------------


def test_child_that_dies_is_logged_and_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="shared.children")
    clock = FakeClock(1000.0)
    dies = Child("dies", [PY, "-c", "import sys; sys.exit(3)"])
    stays = Child("stays", LOOP)
    sup = Supervisor([dies, stays], clock=clock, stable_after_s=30.0)
    sup.start()
    try:
        first_pid = dies.pid
        assert first_pid and stays.pid
        dies.proc.wait(timeout=30)
        clock.advance(0.5)
        sup.run_once()
        assert dies.proc is None and dies.failures == 1
        assert dies.restart_at == pytest.approx(clock.now + 1.0)
        assert re.search(
            rf"dies \(pid {first_pid}\) exited unexpectedly, exit code 3, .*restarting in 1\.0s", caplog.text
        )

        sup.run_once()  # backoff not over: not restarted yet
        assert dies.proc is None
        clock.advance(1.0)
        sup.run_once()
        assert dies.pid not in (None, first_pid)
        assert f"started dies pid={dies.pid}" in caplog.text

        dies.proc.wait(timeout=30)  # dies again at once: the wait doubles
        sup.run_once()
        assert (dies.failures, dies.restart_at) == (2, pytest.approx(clock.now + 2.0))
        clock.advance(2.0)
        sup.run_once()
        assert dies.proc is not None and dies.restarts == 2

        # A child that stayed up past stable_after_s has its failure count reset.
        clock.advance(31.0)
        os.kill(stays.pid, signal.SIGKILL)
        stays.proc.wait(timeout=30)
        sup.run_once()
        assert stays.failures == 1 and stays.restart_at == pytest.approx(clock.now + 1.0)
        assert "stays" in caplog.text and "killed by SIGKILL" in caplog.text
        assert stays.proc is None
    finally:
        pids = [c.pid for c in sup.children if c.pid]
        sup.stop(grace_s=10)
    assert all(c.proc is None for c in sup.children)
    assert all(pid_gone(pid) for pid in pids)


def test_run_loop_restarts_until_stopped() -> None:
    flaky = Child("flaky", [PY, "-c", "import sys; sys.exit(1)"])
    steady = Child("steady", LOOP)
    sup = Supervisor([flaky, steady], backoff_base_s=0.01, backoff_cap_s=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=sup.run, args=(stop,), kwargs={"grace_s": 10})
    runner.start()
    try:
        wait_for(lambda: flaky.restarts >= 3, 30, "three restarts of the flaky child")
        steady_pid = steady.pid
        assert steady_pid and steady.restarts == 0
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert steady.proc is None and flaky.proc is None
    assert pid_gone(steady_pid)


@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "in-the-supervisors-group"])
def test_stop_kills_a_child_that_ignores_sigterm(caplog: pytest.LogCaptureFixture, own_session: bool) -> None:
    """Also a child in the supervisor's own process group (workers/pool.py's): its pid is no group
    to kill, so the process itself is."""
    caplog.set_level("INFO", logger="shared.children")
    stubborn = Child(
        "stubborn",
        _py(
            """
            import signal, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            while True:
                time.sleep(0.05)
            """
        ),
        own_session=own_session,
    )
    sup = Supervisor([stubborn], stdout=subprocess.PIPE)
    sup.start()
    pid = stubborn.pid
    assert stubborn.proc.stdout.readline() == b"ready\n"  # its SIGTERM handler is in place
    assert (os.getpgid(pid) == pid) is own_session
    started = time.monotonic()
    codes = sup.stop(grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert codes == {"stubborn": -signal.SIGKILL}
    assert pid_gone(pid)
    assert f"stubborn pid={pid} still running after" in caplog.text


# --- `up()` in a process of its own, with stand-in children --------------------------------

# Marks itself ready; on SIGTERM checks the Redis it was given still answers (Redis must be
# stopped after the children), writes what it saw, and exits 0. It leaves a grandchild behind.
WARM_CHILD = """
import os, signal, subprocess, sys, time
from pathlib import Path
import redis
out = Path(sys.argv[1])
grandchild = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.05)"])
def on_term(signum, frame):
    url = os.environ["DLPIPE_REDIS_URL"]
    try:
        ok = redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        ok = f"error {exc}"
    (out / "warm.txt").write_text(f"{url} {ok}")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(out / "warm.ready").write_text(f"{os.getpid()} {grandchild.pid}")
while True:
    time.sleep(0.05)
"""

STUBBORN_CHILD = """
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path(sys.argv[1], "stubborn.ready").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

ENV_CHILD = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1], "env.txt").write_text(os.environ["DLPIPE_REDIS_URL"])
while True:
    time.sleep(0.05)
"""


def _py(code: str, *args: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code), *args]


def test_sigterm_stops_children_warmly_then_redis(tmp_path: Path, ups: list[UpProcess]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    up = UpProcess(
        tmp_path,
        free_port(),
        {"warm": _py(WARM_CHILD, str(out)), "stubborn": _py(STUBBORN_CHILD, str(out))},
        grace_s=1.0,
    )
    ups.append(up)
    up.wait_started()
    url = up.redis_url()
    assert url
    redis_pid = up.pids()["redis"]
    warm_pid, grandchild_pid = map(int, wait_for(lambda: _read(out / "warm.ready"), 30, "warm child").split())
    stubborn_pid = int(wait_for(lambda: _read(out / "stubborn.ready"), 30, "stubborn child"))
    assert warm_pid == up.pids()["warm"] and stubborn_pid == up.pids()["stubborn"]

    assert up.terminate() == 0
    log = up.log()
    # The warm child got SIGTERM while Redis still answered, and saw the embedded Redis's URL.
    assert (out / "warm.txt").read_text() == f"{url} True"
    assert re.search(r"stubborn pid=\d+ still running after 1s: SIGKILL", log)
    assert log.index("stubborn pid=") < log.index("stopping redis pid=")  # children first, Redis last
    for pid in (warm_pid, grandchild_pid, stubborn_pid, redis_pid):
        wait_for(lambda pid=pid: pid_gone(pid), 10, f"pid {pid} to be gone")


def _read(path: Path) -> str | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return text or None


def test_embedded_redis_persists_with_aof_and_two_ups_share_nothing(
    tmp_path: Path, ups: list[UpProcess]
) -> None:
    port_a, port_b = free_port(), free_port()
    while port_b == port_a:
        port_b = free_port()
    a = UpProcess(tmp_path, port_a, {"loop": LOOP})
    b = UpProcess(tmp_path, port_b, {"loop": LOOP})
    ups.extend([a, b])
    a.wait_started()
    b.wait_started()
    url_a, url_b = a.redis_url(), b.redis_url()
    assert url_a and url_b and url_a != url_b
    assert (tmp_path / "data" / f"redis-{port_a}").is_dir()
    assert (tmp_path / "data" / f"redis-{port_b}").is_dir()

    client = redis.Redis.from_url(url_a)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    client.set("dlpipe:test:persist", "kept")
    client.close()
    client_b = redis.Redis.from_url(url_b)
    assert client_b.get("dlpipe:test:persist") is None  # B's Redis is its own
    client_b.close()

    # A second `up` on the same port is refused: it would share A's Redis folder.
    clash = UpProcess(tmp_path, port_a, {"loop": LOOP})
    ups.append(clash)
    assert clash.proc.wait(timeout=60) != 0
    assert "another `dlpipe up` is using" in clash.log()

    redis_pid_a = a.pids()["redis"]
    assert a.terminate() == 0
    assert b.terminate() == 0
    wait_for(lambda: pid_gone(redis_pid_a), 10, "A's redis-server to be gone")

    again = UpProcess(tmp_path, port_a, {"loop": LOOP})  # same port: same data folder
    ups.append(again)
    again.wait_started()
    client = redis.Redis.from_url(again.redis_url())
    assert client.get("dlpipe:test:persist") == b"kept"  # replayed from the AOF (RDB saving is off)
    client.close()
    assert again.terminate() == 0


def test_no_embedded_redis_when_url_is_set(tmp_path: Path, redis_url: str, ups: list[UpProcess]) -> None:
    port = free_port()
    out = tmp_path / "out"
    out.mkdir()
    up = UpProcess(tmp_path, port, {"env": _py(ENV_CHILD, str(out))}, redis_url=redis_url)
    ups.append(up)
    log = up.wait_started()
    assert "no embedded server" in log
    assert up.redis_url() is None
    assert set(up.pids()) == {"env"}
    assert wait_for(lambda: _read(out / "env.txt"), 30, "the child's env") == redis_url
    assert not (tmp_path / "data" / f"redis-{port}").exists()
    assert up.terminate() == 0
    client = redis.Redis.from_url(redis_url)
    assert client.ping()  # not ours to stop: still there
    client.close()


# --- dlpipe healthcheck against a real Redis ------------------------------------------------


def test_worker_healthcheck_reads_heartbeats(
    redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLPIPE_REDIS_URL", redis_url)
    monkeypatch.setattr(cli, "setup_logging", lambda level, role: None)
    assert cli.main(["healthcheck", "model"]) == 1  # nobody yet
    pipe = redis_client.pipeline()
    now = int(time.time() * 1000)
    heartbeat.add_heartbeat(pipe, "w1", "model", ["dlpipe:stream:model.m"], now, 10_000)
    pipe.execute()
    assert cli.main(["healthcheck", "model"]) == 0
    assert cli.main(["healthcheck", "notifier"]) == 1
    pipe = redis_client.pipeline()  # a heartbeat older than worker_ttl_ms does not count
    heartbeat.add_heartbeat(pipe, "w1", "model", ["dlpipe:stream:model.m"], now - 60_000, 10_000)
    pipe.execute()
    assert cli.main(["healthcheck", "model"]) == 1


# --- the real `dlpipe up` (needs the API and the workers) ----------------------------------

REAL_MODULES = ("services.api.server", "workers.preprocess", "workers.model_main", "workers.notifier")


def _missing_modules() -> list[str]:
    missing = []
    for name in REAL_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


@pytest.mark.e2e
@pytest.mark.skipif(bool(_missing_modules()), reason=f"needs {', '.join(_missing_modules())}")
def test_dlpipe_up_runs_the_real_stack(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(DLPIPE_PORT=str(port), DLPIPE_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO))
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [PY, "-m", "services.cli", "up"], cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"dlpipe up exited {proc.returncode}:\n{log_path.read_text()}")
                try:  # 200 once every stream has a live worker: the API and all workers are up
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        return r.status == 200
                except OSError:
                    return False

            wait_for(ready, 180, "/readyz to answer 200")
            log = log_path.read_text()
            assert "exited unexpectedly" not in log, log
            pids = {name: int(pid) for name, pid in re.findall(r"started (\w+) pid=(\d+)", log)}
            assert set(pids) == {"redis", *CHILD_COMMANDS}
            for name, args in CHILD_COMMANDS.items():  # `ps` shows what each child is
                raw = Path(f"/proc/{pids[name]}/cmdline").read_bytes()
                parts = [part.decode() for part in raw.split(b"\0") if part]
                assert parts[-len(args) :] == list(args), parts
                assert any(p.endswith("/dlpipe") or p == "services.cli" for p in parts), parts
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=90) == 0, log_path.read_text()
            log = log_path.read_text()
            for name in ("preprocess", "model", "notifier"):  # warm shutdown: they exit by themselves
                assert re.search(rf"{name} pid={pids[name]} stopped, exit code 0", log), log
            assert "SIGKILL" not in log, log
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for pid in pids.values():
        wait_for(lambda pid=pid: pid_gone(pid), 10, f"pid {pid} to be gone")
