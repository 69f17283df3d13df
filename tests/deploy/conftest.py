"""The Compose stack for tests/deploy (marker `compose`: only `make test-compose` selects it).

Environment first (skips, with the reason): root, a Docker daemon of our own, the base image from
Debian's mirror, the wheelhouse from PyPI and the host's CPU torch, the stand-in Redis image. Then
the project's own work (failures): building both images with docker-compose, starting the stack,
every container turning healthy. The report (image sizes, seconds per step) is printed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.embedded_redis import free_port
from tests.deploy import compose_cache
from tests.deploy.compose_stack import API_IMAGE, SERVICES, WORKER_IMAGE, Compose, Timer
from tests.deploy.dockerd import Dockerd, Unavailable

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "dlpipe-base:bookworm"
REDIS_IMAGE = "dlpipe-test-redis:7.1"  # bump when tests/deploy/Dockerfile.redis changes
HEALTHY_TIMEOUT_S = 240
TIMER = Timer()  # seconds per step, setup and tests alike
REPORT: dict[str, Any] = {"seconds": TIMER.seconds}


def cache_dir() -> Path:
    return Path(os.environ.get("TEST_COMPOSE_CACHE") or REPO / ".dlpipe" / "compose-cache").resolve()


def _image_exists(compose: Compose, image: str) -> bool:
    return compose.docker("image", "inspect", image, check=False).returncode == 0


def _prepare(compose: Compose, cache: Path, timer: Timer) -> Path:
    """The base image, the wheelhouse and the Redis image: all the environment's (Unavailable)."""
    with timer.step("base_image"):
        if not _image_exists(compose, BASE_IMAGE):
            tarball = compose_cache.base_tarball(cache)
            with tarball.open("rb") as data:
                done = subprocess.run(
                    ["docker", "import", "-", BASE_IMAGE],
                    stdin=data,
                    env=compose.env(),
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
            if done.returncode != 0:
                raise Unavailable(f"docker import of the base image failed: {done.stderr.strip()}")
    with timer.step("wheelhouse"):
        wheels = compose_cache.wheelhouse(cache, BASE_IMAGE, compose.docker)
    with timer.step("redis_image"):
        if not _image_exists(compose, REDIS_IMAGE):
            built = compose.docker(
                "build",
                "--network",
                "host",
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "-t",
                REDIS_IMAGE,
                "-f",
                str(REPO / "tests/deploy/Dockerfile.redis"),
                str(REPO / "tests/deploy"),
                timeout_s=600,
                check=False,
            )
            if built.returncode != 0:
                raise Unavailable(
                    f"the stand-in Redis image (apt in the base) did not build: {built.stderr[-500:]}"
                )
    return wheels


@pytest.fixture(scope="module")
def compose_stack() -> Iterator[Compose]:
    cache = cache_dir()
    timer = TIMER
    REPORT["cache"] = str(cache)
    dockerd = Dockerd(data_root=cache / "docker")
    with timer.step("dockerd_start"):
        try:
            dockerd.start()
        except Unavailable as exc:
            dockerd.stop()  # its run folder
            REPORT["skipped"] = str(exc)
            pytest.skip(f"no Docker daemon for the Compose test: {exc}")
    compose = Compose(dockerd, {"TEST_BASE_IMAGE": BASE_IMAGE, "TEST_REDIS_IMAGE": REDIS_IMAGE})
    try:
        try:
            wheels = _prepare(compose, cache, timer)
        except Unavailable as exc:
            REPORT["skipped"] = str(exc)
            pytest.skip(f"cannot make what the Compose test builds from: {exc}")
        with compose_cache.WheelServer(wheels) as server:
            compose.variables.update(TEST_FIND_LINKS=server.url, API_PUBLISH=f"127.0.0.1:{free_port()}")
            with timer.step("build_api"):
                compose.compose("build", "api", timeout_s=900)
            with timer.step("build_workers"):
                compose.compose("build", "preprocess", "model-cpu", "notifier", timeout_s=900)
        REPORT["image_mb"] = {
            image: compose.image_size_mb(image)
            for image in (BASE_IMAGE, API_IMAGE, WORKER_IMAGE, REDIS_IMAGE)
        }
        with timer.step("up_to_healthy"):
            compose.compose("up", "-d", "--no-build")
            compose.wait_healthy(SERVICES, HEALTHY_TIMEOUT_S)
        yield compose
    finally:
        with timer.step("down"):
            compose.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        # Old builds of our own images only (this daemon is the test's): the tagged ones stay for the next run.
        compose.docker("image", "prune", "-f", check=False)
        with timer.step("dockerd_stop"):
            dockerd.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "cache" in REPORT:  # the Compose stack was asked for
        terminalreporter.write_line("compose run: " + json.dumps(REPORT, sort_keys=True))
        out = cache_dir() / "last-run.json"
        if out.parent.is_dir():
            out.write_text(json.dumps(REPORT, indent=2, sort_keys=True) + "\n")
