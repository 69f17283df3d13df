"""docs/custom-models.md's section 5, "Your own exported model, no Python", run as written: its
export script, its pipelines file (only the generic ONNX class and the file), its commands in
the order given: export, `dlpipe check`, `dlpipe up`, a photo posted to the pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from services import cli
from tests.e2e.conftest import REPO, dlpipe_command, start_stack, stop_stack
from tests.support.guides import CUSTOM_MODELS, write_guide_files
from tests.support.photos import photo_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SECTION = "## 5. Your own exported model, no Python"
COMMANDS = [
    "python export_model.py",
    "export DLPIPE_PIPELINES_FILE=exported-pipelines.yaml",
    "dlpipe check",
    "dlpipe up",
    "curl -F files=@cat.jpg http://127.0.0.1:8000/v1/pipelines/my-classify/jobs",
]
CAT_CLASSES = {281, 282, 283, 285, 287}  # tabby, tiger cat, Persian, Egyptian cat, lynx


def section_commands() -> list[str]:
    """The shell block of section 5, one command a line, comments dropped."""
    part = CUSTOM_MODELS.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", part, re.S)
    assert block, "section 5 has a sh block"
    return [line.split("#", 1)[0].strip() for line in block[1].splitlines() if line.split("#", 1)[0].strip()]


def test_the_exported_model_section_runs_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert section_commands() == COMMANDS  # the steps below are the section's, in its order
    files = write_guide_files(tmp_path)
    assert {"export_model.py", "exported-pipelines.yaml"} <= set(files)
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the repository's code, run from the guide's folder

    subprocess.run([sys.executable, "export_model.py"], cwd=tmp_path, env=env, check=True, timeout=300)
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "labels.txt").is_file()
    env["DLPIPE_PIPELINES_FILE"] = "exported-pipelines.yaml"
    check = subprocess.run(
        [*dlpipe_command(), "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0 and "my-classify" in check.stdout, check.stdout + check.stderr

    # The error the section quotes, for the same file with another input size.
    document = yaml.safe_load(files["exported-pipelines.yaml"].read_text())
    params = document["models"]["my_classifier"]["params"]
    params.update(
        input_size=[299, 299], path=str(tmp_path / params["path"]), labels=str(tmp_path / params["labels"])
    )
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(document))
    assert cli.main(["check", "--pipelines-file", str(tmp_path / "bad.yaml")]) == 1
    quoted = (
        "model 'my_classifier': params.input_size: the model takes input of shape ['batch', 3, 224, 224], "
        "the params give ['N', 3, 299, 299] (NCHW)"
    )
    assert " ".join(quoted.split()) in " ".join(CUSTOM_MODELS.read_text().split())
    assert " ".join(quoted.split()) in capsys.readouterr().err

    (tmp_path / "stack").mkdir()
    stack = start_stack(
        tmp_path / "stack",
        {"DLPIPE_PIPELINES_FILE": "exported-pipelines.yaml", "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
    )
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            files_ = [("files", ("cat.jpg", photo_bytes("chelsea.png"), "image/jpeg"))]
            response = client.post("/v1/pipelines/my-classify/jobs", files=files_)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            job = wait_until(
                lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["status"] == "succeeded" and j,
                timeout_s=60,
                what="the my-classify job",
            )
        (output,) = job["outputs"]
        labels = output["result"]["labels"]
        assert len(labels) == 3 and labels[0]["index"] in CAT_CLASSES, labels
        assert labels[0]["label"] in ("tabby", "tiger cat", "Egyptian cat") and 0 < labels[0]["score"] <= 1
    finally:
        stop_stack(stack)
