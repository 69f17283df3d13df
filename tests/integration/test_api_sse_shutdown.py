"""A real `dlpipe api` stopping (SIGTERM) ends its event streams at once: uvicorn's graceful
shutdown does not wait out its timeout on them, and the clients see a clean end of stream."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import httpx

from tests.support.api import write_pipelines
from tests.support.apiproc import api_process

BODY = {"inputs": [{"image_base64": base64.b64encode(b"abc").decode()}]}


def test_event_streams_end_when_the_api_stops(tmp_path: Path, redis_url: str) -> None:
    pipelines = str(write_pipelines(tmp_path))
    with api_process(tmp_path, redis_url, pipelines_file=pipelines, api_keys="k1") as api:
        headers = {"Authorization": "Bearer k1"}
        job = httpx.post(f"{api.url}/v1/pipelines/img/jobs", json=BODY, headers=headers, timeout=10).json()
        streams = [
            httpx.stream(
                "GET", f"{api.url}/v1/jobs/{job['id']}/events", params={"access_token": "k1"}, timeout=60
            )
            for _ in range(3)
        ]
        responses = [s.__enter__() for s in streams]
        lines = [r.iter_lines() for r in responses]
        for it in lines:  # each stream is open: its first progress event came
            assert next(line for line in it if line.startswith("event: ")) == "event: progress"
        api.proc.send_signal(signal.SIGTERM)
        for it in lines:
            rest = list(it)  # reads to the end of the stream: it ends, cleanly (no error raised)
            assert not any(line.startswith("event: ") for line in rest)
        for stream in streams:
            stream.__exit__(None, None, None)
        assert api.proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn raises the signal again
        log = api.log_text()
        assert "Application shutdown complete" in log, log
        assert "graceful shutdown exceeded" not in log, log
        assert "k1" not in log.replace("DLPIPE", ""), "the access log shows the key"
