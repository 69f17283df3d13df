"""`dlpipe up`'s supervisor in a process of its own, running stand-in children (small `python -c`
programs given by the test); its log in a file. (The `ups` fixture is in tests/integration/conftest.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.support.waiting import wait_for

PY = sys.executable
LOOP = [PY, "-c", "import time\nwhile True: time.sleep(0.05)"]  # a child that runs until stopped

UP_SCRIPT = """
import json, sys
from shared.logs import setup_logging
from shared.settings import Settings
from services import supervisor
setup_logging("INFO", "up")
commands = json.loads(sys.argv[1])
sys.exit(supervisor.up(Settings(), commands, grace_s=float(sys.argv[2]), backoff_base_s=0.05))
"""


def pid_gone(pid: int) -> bool:
    """The process no longer exists (or is a zombie waiting to be reaped by someone else)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class UpProcess:
    """A supervisor process running `up()` with stand-in children; its log goes to a file."""

    def __init__(
        self,
        tmp: Path,
        port: int,
        commands: dict[str, list[str]],
        grace_s: float = 10.0,
        redis_url: str | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.tmp = tmp
        self.log_path = tmp / f"up-{port}-{time.monotonic_ns()}.log"
        script = tmp / "up_script.py"
        script.write_text(UP_SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
        env["PYTHONPATH"] = str(REPO)
        env["DLPIPE_PORT"] = str(port)
        env["DLPIPE_DATA_DIR"] = str(data_dir or tmp / "data")
        if redis_url:
            env["DLPIPE_REDIS_URL"] = redis_url
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, str(script), json.dumps(commands), str(grace_s)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_started(self, timeout_s: float = 60) -> str:
        def started() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited with {self.proc.returncode}:\n{self.log()}")
            text = self.log()
            return text if "API: http://" in text else None

        return wait_for(started, timeout_s, "the supervisor to start its children")  # type: ignore[return-value]

    def pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"started (\w+) pid=(\d+)", self.log())}

    def redis_url(self) -> str | None:
        found = re.search(
            r"Redis: (redis://127\.0\.0\.1:(\d+)/0) \(embedded redis-server pid=(\d+)", self.log()
        )
        if not found:
            return None
        assert int(found.group(2)) != 6379, "the embedded Redis must never take 6379"
        return found.group(1)

    def terminate(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()
