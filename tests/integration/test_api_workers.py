"""`dlpipe api` with DLPIPE_API_WORKERS=2: two API processes on one port, each a whole API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from shared.embedded_redis import free_port
from tests.conftest import REPO
from tests.support.waiting import wait_until


def test_two_api_processes_share_the_port_and_take_jobs(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DLPIPE_REDIS_URL": redis_url,
        "DLPIPE_API_WORKERS": "2",
        "DLPIPE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, timeout_s=60, what="the API answering")
        api_processes = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())
        ]
        assert len(api_processes) == 2, [p.cmdline() for p in api_processes]
        body = {"inputs": [{"text": "hello"}]}
        with httpx.Client(base_url=base, timeout=10) as client:
            ids = [client.post("/v1/pipelines/text-embed/jobs", json=body).json()["id"] for _ in range(20)]
            assert len(set(ids)) == 20
            assert all(client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued" for job_id in ids)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
