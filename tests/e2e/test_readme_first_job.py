"""The README's first job, run as written (its `first-job.sh` block, by the custom-models guide's
runner) against `dlpipe up`: only the address is the test stack's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, start_stack, stop_stack
from tests.support.guides import write_guide_files
from tests.support.photos import photo_bytes

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
ADDRESS = "http://127.0.0.1:8000"  # what the README's commands name
CAT_CLASSES = {281, 282, 283, 285, 287}  # tabby, tiger cat, Persian, Egyptian cat, lynx


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("python3")), reason="needs curl and python3")
def test_the_readme_first_job_runs_as_written(tmp_path: Path) -> None:
    script = write_guide_files(tmp_path, README)["first-job.sh"]
    assert ADDRESS in script.read_text()
    (tmp_path / "cat.jpg").write_bytes(photo_bytes("chelsea.png"))  # scikit-image's cat

    (tmp_path / "stack").mkdir()
    stack = start_stack(tmp_path / "stack")
    try:
        script.write_text(script.read_text().replace(ADDRESS, stack.base_url))
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", script.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_stack(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["pipeline"] == "image-classify" and job["status"] == "succeeded", job
    (output,) = job["outputs"]
    labels = output["result"]["labels"]
    assert len(labels) == 5 and labels[0]["index"] in CAT_CLASSES, labels
    assert output["source"] == "cat.jpg"
