"""docker-compose against the test's private daemon: the project, its containers, their health."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.dockerd import Dockerd
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "docker-compose.yml", REPO / "docker-compose.cpu.yml", REPO / "tests/deploy/compose.test.yml"]
PROJECT = "dlpipe-composetest"
SERVICES = ["redis", "api", "preprocess", "model-cpu", "notifier"]
API_IMAGE = "dlpipe-api:0.1.0"
WORKER_IMAGE = "dlpipe-worker-cpu:0.1.0"
LABEL = f"label=com.docker.compose.project={PROJECT}"


class CommandFailed(AssertionError):
    pass


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Timer:
    """Seconds per step, in the order they ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    def step(self, name: str) -> _Step:
        return _Step(self, name)


class _Step:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds[self.name] = round(time.monotonic() - self.start, 1)


@dataclass
class Compose:
    dockerd: Dockerd
    variables: dict[str, str]

    def env(self) -> dict[str, str]:
        return {**self.dockerd.env(), **self.variables}

    def docker(
        self, *args: str, timeout_s: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run(["docker", *args], timeout_s, check)

    def compose(
        self, *args: str, timeout_s: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        files = [part for path in FILES for part in ("-f", str(path))]
        return self._run(
            ["docker-compose", "--project-directory", str(REPO), "-p", PROJECT, *files, *args],
            timeout_s,
            check,
        )

    def _run(self, command: list[str], timeout_s: float, check: bool) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            command, env=self.env(), cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and done.returncode != 0:
            raise CommandFailed(
                f"{' '.join(command[:6])} ... exited {done.returncode}:\n{tail(done.stdout + done.stderr)}"
            )
        return done

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        assert cid, f"no container for {service}"
        return cid

    def state(self, service: str) -> dict[str, Any]:
        return json.loads(self.docker("inspect", "-f", "{{json .}}", self.container(service)).stdout)

    def healthy(self, services: list[str]) -> dict[str, str]:
        status = {}
        for service in services:
            state = self.state(service)["State"]
            status[service] = (
                state.get("Health", {}).get("Status", state["Status"])
                if state["Running"]
                else state["Status"]
            )
        return status

    def wait_healthy(self, services: list[str], timeout_s: float) -> None:
        try:
            wait_until(
                lambda: all(s == "healthy" for s in self.healthy(services).values()),
                timeout_s=timeout_s,
                what=f"{services} to be healthy",
                interval_s=0.5,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {self.healthy(services)}\n{self.logs()}") from None

    def logs(self, service: str | None = None, lines: int = 30) -> str:
        done = self.compose(
            "logs", "--no-color", "--tail", str(lines), *([service] if service else []), check=False
        )
        return tail(done.stdout + done.stderr, lines * 5)

    def image_size_mb(self, image: str) -> float:
        return round(int(self.docker("image", "inspect", "-f", "{{.Size}}", image).stdout) / 1e6, 1)

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, networks and volumes still there (Compose labels them all)."""
        kinds = {
            "containers": ["ps", "-a", "-q", "--filter", LABEL],
            "networks": ["network", "ls", "-q", "--filter", LABEL],
            "volumes": ["volume", "ls", "-q", "--filter", LABEL],
        }
        return {kind: self.docker(*args).stdout.split() for kind, args in kinds.items()}
