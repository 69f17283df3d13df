"""A private Docker daemon for the Compose test: started by the test, stopped by the test.

It has its own socket, exec root, pid file and data root (under the compose cache, so that the
base image, the test Redis image and the build cache survive between runs), and no default bridge
(`--bridge=none`): Compose makes its own networks, builds run on the host's network (to reach the
test's wheel server on loopback). It never touches another daemon on the machine.

What cannot be had here (not root, no dockerd binary, a daemon that does not come up) is an
`Unavailable` with the reason: the test skips with it. Anything after that is the test's business.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


class Unavailable(Exception):
    """The environment cannot run the Compose test (the test skips, with this reason)."""


@dataclass
class Dockerd:
    data_root: Path
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dlpipe-dockerd-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "dockerd.log"

    def env(self) -> dict[str, str]:
        """The environment for docker and docker-compose: this daemon, the classic builder (BuildKit
        would fetch its Dockerfile frontend from Docker Hub), no Compose or Docker config of the user's."""
        env = dict(os.environ)
        env.update(
            DOCKER_HOST=self.host,
            DOCKER_BUILDKIT="0",
            COMPOSE_DOCKER_CLI_BUILD="0",
            DOCKER_CONFIG=str(self.run_dir / "config"),
            COMPOSE_INTERACTIVE_NO_CLI="1",
        )
        env.pop("COMPOSE_FILE", None)
        env.pop("COMPOSE_PROJECT_NAME", None)
        return env

    def start(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("not root: starting a Docker daemon needs root")
        missing = [tool for tool in ("dockerd", "docker", "docker-compose") if shutil.which(tool) is None]
        if missing:
            raise Unavailable(
                f"not installed: {', '.join(missing)} (Debian: apt-get install docker.io docker-compose)"
            )
        self.data_root.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config").mkdir(exist_ok=True)
        command = [
            "dockerd",
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.run_dir / "exec"),
            "--pidfile",
            str(self.run_dir / "dockerd.pid"),
            "--host",
            self.host,
            "--bridge",
            "none",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"dockerd exited ({self.proc.returncode}): {self.log_tail()}")
            probe = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.2)  # polling the daemon's socket, with a deadline
        self.stop()
        raise Unavailable(f"dockerd did not answer within {START_TIMEOUT_S}s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the daemon we started (its containerd goes with it) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None
        self._unmount_leftovers()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """dockerd leaves its network namespace bind-mounted (exec/netns/default) after it exits."""
        prefix = str(self.run_dir) + "/"
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", point], capture_output=True, timeout=30, check=False)
