"""docs/custom-models.md, run exactly as written: its files, `dlpipe check`, and a job through `dlpipe up`."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import dlpipe_command, start_stack, stop_stack
from tests.support.guides import write_guide_files
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def solid_jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    files = write_guide_files(tmp_path)
    assert {"my_models/colors.py", "my-pipelines.yaml"} <= set(files)  # (and section 5's: a sibling test)
    env_vars = {"PYTHONPATH": str(tmp_path), "DLPIPE_PIPELINES_FILE": str(files["my-pipelines.yaml"])}
    check = subprocess.run(
        [*dlpipe_command(), "check"],
        env={**os.environ, **env_vars},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "dominant-color" in check.stdout

    (tmp_path / "stack").mkdir()
    stack = start_stack(tmp_path / "stack", env_vars)
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            files_ = [
                ("files", (f"{name}.jpg", solid_jpeg(rgb), "image/jpeg"))
                for name, rgb in (("red", (200, 20, 25)), ("blue", (20, 50, 230)))
            ]
            response = client.post("/v1/pipelines/dominant-color/jobs", files=files_)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            job = wait_until(
                lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["status"] == "succeeded" and j,
                timeout_s=60,
                what="the dominant-color job",
            )
        red, blue = (o["result"] for o in job["outputs"])
        assert red["colors"][0] == "red" and blue["colors"][0] == "blue", job["outputs"]
        assert abs(red["rgb"][0] - 200) < 6 and abs(blue["rgb"][2] - 230) < 6
    finally:
        stop_stack(stack)
