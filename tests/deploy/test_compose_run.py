"""docker-compose.yml + docker-compose.cpu.yml, built and run for real (`make test-compose`).

In order, on one stack (tests/deploy/conftest.py builds it and waits for every healthcheck):
the API image has no torch; every container runs as non-root; a real photo is classified through
the API's published port (loopback); the model container's main process SIGKILLed comes back by
its restart policy and the next job succeeds; a job accepted before Redis restarts survives it
(AOF); `docker-compose down -v` leaves no container, network or volume.
"""

from __future__ import annotations

import base64
import os
import signal
from typing import Any

import httpx
import pytest

from tests.deploy.compose_stack import API_IMAGE, SERVICES, WORKER_IMAGE, Compose
from tests.deploy.conftest import REPORT, TIMER
from tests.support.photos import photo_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup
JOB_TIMEOUT_S = 120


def _client(stack: Compose) -> httpx.Client:
    return httpx.Client(base_url=f"http://{stack.variables['API_PUBLISH']}", timeout=30)


def _submit(client: httpx.Client, photo: str) -> dict[str, Any]:
    image = base64.b64encode(photo_bytes(photo, size=(1920, 1080))).decode()
    response = client.post("/v1/pipelines/image-classify/jobs", json={"inputs": [{"image_base64": image}]})
    assert response.status_code == 202, response.text
    return response.json()


def _final(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(final, timeout_s=JOB_TIMEOUT_S, what=f"job {job_id} to finish", interval_s=0.1)


def _top1(job: dict[str, Any]) -> int:
    assert job["status"] == "succeeded", job
    (output,) = job["outputs"]
    return output["result"]["labels"][0]["index"]


def test_the_api_image_has_no_torch_and_the_worker_image_has_cpu_torch(compose_stack: Compose) -> None:
    run = ("run", "--rm", "--network", "none")
    api = compose_stack.docker(*run, API_IMAGE, "python", "-c", "import torch", check=False)
    assert api.returncode != 0 and "No module named 'torch'" in api.stderr, api.stdout + api.stderr
    listed = compose_stack.docker(*run, API_IMAGE, "pip", "list", "--format", "freeze")
    assert "fastapi==" in listed.stdout and "torch" not in listed.stdout.lower()
    worker = compose_stack.docker(
        *run, WORKER_IMAGE, "python", "-c", "import torch; print(torch.__version__)"
    )
    assert worker.stdout.strip() == "2.13.0+cpu"


def test_every_container_runs_as_non_root(compose_stack: Compose) -> None:
    uids = {
        s: compose_stack.docker("exec", compose_stack.container(s), "id", "-u").stdout.strip()
        for s in SERVICES
    }
    assert all(uid.isdigit() and uid != "0" for uid in uids.values()), uids
    REPORT["uids"] = uids


def test_a_real_photo_is_classified_through_the_published_port(compose_stack: Compose) -> None:
    assert compose_stack.variables["API_PUBLISH"].startswith("127.0.0.1:")
    with _client(compose_stack) as client:
        assert client.get("/readyz").status_code == 200
        with TIMER.step("classify"):
            assert _top1(_final(client, _submit(client, "chelsea.png")["id"])) in CAT_CLASSES


def test_a_killed_model_worker_is_restarted_and_the_next_job_succeeds(compose_stack: Compose) -> None:
    before = compose_stack.state("model-cpu")
    assert before["State"]["Running"] and before["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    with TIMER.step("model_kill_to_healthy"):
        os.kill(before["State"]["Pid"], signal.SIGKILL)  # a crash, not `docker kill` (a manual stop)

        def restarted() -> bool:
            state = compose_stack.state("model-cpu")
            return (
                state["RestartCount"] > before["RestartCount"]
                and state["State"]["Pid"] != before["State"]["Pid"]
            )

        wait_until(restarted, timeout_s=60, what="the model container to restart", interval_s=0.2)
        compose_stack.wait_healthy(["model-cpu"], timeout_s=120)
    after = compose_stack.state("model-cpu")
    assert after["Id"] == before["Id"], "the same container, restarted by its policy"
    with _client(compose_stack) as client, TIMER.step("job_after_model_restart"):
        assert _top1(_final(client, _submit(client, "coffee.png")["id"])) in COFFEE_CLASSES


def test_a_job_accepted_before_redis_restarts_survives_it(compose_stack: Compose) -> None:
    redis = compose_stack.container("redis")
    info = compose_stack.docker("exec", redis, "redis-cli", "info", "persistence").stdout
    assert "aof_enabled:1" in info, info
    with _client(compose_stack) as client:
        compose_stack.compose("stop", "model-cpu")  # the job stays queued, unfinished, across the restart
        try:
            job = _submit(client, "chelsea.png")
            with TIMER.step("redis_restart_to_healthy"):
                compose_stack.compose("restart", "redis")
                compose_stack.wait_healthy(["redis"], timeout_s=120)
            log = compose_stack.docker("logs", "--since", "2m", redis).stdout
            REPORT["redis_loaded"] = [
                line.split(" * ")[-1] for line in log.splitlines() if "loaded" in line.lower()
            ]
            assert any(
                "aof" in line.lower() or "append only" in line.lower() for line in REPORT["redis_loaded"]
            ), log

            def survived() -> dict[str, Any] | None:
                response = client.get(f"/v1/jobs/{job['id']}")
                return response.json() if response.status_code == 200 else None

            seen = wait_until(
                survived, timeout_s=60, what="the API to answer for the job again", interval_s=0.2
            )
            assert seen["status"] not in ("succeeded", "failed", "canceled"), seen
        finally:
            compose_stack.compose("start", "model-cpu")
        with TIMER.step("job_after_redis_restart"):
            assert _top1(_final(client, job["id"])) in CAT_CLASSES


def test_down_leaves_no_container_network_or_volume(compose_stack: Compose) -> None:
    assert any(compose_stack.leftovers().values()), "the stack is up before `down`"
    with TIMER.step("down_v"):
        compose_stack.compose("down", "-v", "--remove-orphans", "--timeout", "30")
    assert compose_stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
