"""Worker processes for a test, started as `dlpipe` starts them (`python -m workers.…`): their
logs in files, each stopped by a signal (or killed at the end: the `procs` fixture)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.settings import Settings
from tests.conftest import REPO


class Procs:
    """Worker processes started with `python -m`, their logs in files, killed if left running."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self, settings: Settings, module: str, *args: str, own_group: bool = False
    ) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{module}-{len(self.started)}.log"
        env = {**os.environ, **settings.worker_env(), "PYTHONPATH": str(REPO)}
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=REPO,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                process_group=0 if own_group else None,  # own_group: a terminal's group, for Ctrl-C
            )
        self.started.append((proc, log_path))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return next(path for p, path in self.started if p is proc).read_text()

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()}" for _, path in self.started)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20, ctrl_c: bool = False) -> int:
        """SIGTERM the process; or, with ctrl_c, SIGINT its whole process group (as a terminal does)."""
        if ctrl_c:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.args} did not exit after SIGTERM\n{self.logs()}") from None

    def kill_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()  # preprocess children notice their parent is gone and exit
                proc.wait(timeout=10)
