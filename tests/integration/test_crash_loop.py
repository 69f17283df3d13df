"""A crash loop is given up loudly (shared/children.py): a child that keeps exiting soon after
its start is not started again; the supervisor stops the rest, and `dlpipe up` exits 1."""

from __future__ import annotations

import logging
import re
import sys
import threading
from pathlib import Path

import psutil
import pytest

from services.supervisor import up
from shared.children import Child, Supervisor
from shared.embedded_redis import free_port
from shared.settings import Settings

PY = sys.executable
CRASHES = [PY, "-c", "import sys; sys.exit(3)"]
STEADY = [PY, "-c", "import time\nwhile True: time.sleep(0.05)"]


def test_the_supervisor_gives_up_a_crash_loop_and_stops_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="shared.children")
    crashes, steady = Child("crashes", CRASHES), Child("steady", STEADY)
    sup = Supervisor([crashes, steady], backoff_base_s=0.01, backoff_cap_s=0.02, max_failures=3)
    stop = threading.Event()
    runner = threading.Thread(target=lambda: codes.update(sup.run(stop, grace_s=10)))
    codes: dict[str, int] = {}
    runner.start()
    runner.join(60)
    stop.set()  # only if it did not give up by itself: then the asserts below fail
    runner.join(30)
    assert not runner.is_alive()
    assert sup.gave_up() == [crashes] and crashes.failures == 3 and crashes.restarts == 3
    assert codes == {"steady": -15}  # stopped (SIGTERM) once the other was given up
    assert (
        "crashes (pid" in caplog.text
        and "3 exits in a row" in caplog.text
        and "giving up on it" in caplog.text
    )


def test_dlpipe_up_exits_1_when_a_child_keeps_crashing(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(redis_url=redis_url, port=free_port(), data_dir=tmp_path / "data")
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(
            up(
                settings,
                {"crashes": CRASHES, "steady": STEADY},
                stop_event=stop,
                install_signal_handlers=False,
                backoff_base_s=0.01,
                max_failures=3,
            )
        )
    )
    runner.start()
    runner.join(60)
    stop.set()  # only if it did not stop by itself: then result is [0] and the test fails
    runner.join(30)
    assert result == [1], caplog.text
    assert "crashes keeps crashing: stopping the stack (exit status 1)" in caplog.text
    steady = [int(pid) for pid in _started_pids(caplog.text, "steady")]
    assert steady and not any(psutil.pid_exists(pid) for pid in steady)


def _started_pids(log: str, name: str) -> list[str]:
    return re.findall(rf"started {name} pid=(\d+)", log)
