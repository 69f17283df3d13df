"""`dlpipe submit` / `jobs` / `job` / `cancel` as a user runs them, against a real `dlpipe up`:
a folder of photos, the results file, failures, and a resume after the CLI is SIGKILLed."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

import dlpipe
from services.cli_client.inputs import EXTENSIONS, discover, group
from services.cli_client.submit import AUTO_JOB_BYTES, AUTO_PER_JOB
from tests.e2e.clientfiles import CAT_CLASSES, jobs_of_run, photo_folder, read_lines
from tests.e2e.conftest import Stack, dlpipe_command
from tests.support.photos import FHD, photo_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def cli(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dlpipe_command(), *args, "--url", stack.base_url], capture_output=True, text=True, timeout=timeout
    )


def submit_args(photos: Path, out: Path, run: str, *more: str) -> list[str]:
    """`dlpipe submit image-classify` of the folder `photos` into `out`, options `more`, tagged `run`."""
    return [
        "submit",
        "image-classify",
        str(photos),
        "--out",
        str(out),
        *more,
        "--metadata",
        json.dumps({"run": run}),
        "--no-progress",
    ]


def start_cli(stack: Stack, args: list[str], **popen: Any) -> subprocess.Popen:
    """The CLI started on `args` against the stack, its stdout dropped and its stderr piped."""
    return subprocess.Popen(
        [*dlpipe_command(), *args, "--url", stack.base_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **popen,
    )


def wait_for_results(out: Path, count: int) -> None:
    wait_until(
        lambda: out.exists() and out.read_bytes().count(b"\n") >= count,
        timeout_s=120,
        what="a few results",
        interval_s=0.005,
    )


@pytest.fixture
def api(stack: Stack) -> dlpipe.Client:
    with dlpipe.Client(stack.base_url) as client:
        yield client


def test_a_folder_gives_one_line_per_input_and_a_failure_sets_the_exit_code(
    stack: Stack, api: dlpipe.Client, tmp_path: Path
) -> None:
    names = photo_folder(tmp_path / "photos", corrupt=True)
    (tmp_path / "photos" / "notes.md").write_text("not a photo: left out of the folder")
    out, run = tmp_path / "results.jsonl", uuid.uuid4().hex
    args = submit_args(tmp_path / "photos", out, run)
    first = cli(stack, *args)
    assert first.returncode == 1, first.stderr  # bad.jpg failed
    lines = read_lines(out)
    assert sorted(line["source"] for line in lines) == names
    by_source = {line["source"]: line for line in lines}
    bad = by_source[names[0]]
    assert bad["status"] == "failed" and "image" in bad["error"] and bad["job"]
    cat = by_source[str(tmp_path / "photos" / "p00.jpg")]
    assert cat["status"] == "succeeded" and cat["result"]["labels"][0]["index"] in CAT_CLASSES
    assert "30 succeeded, 1 failed" in first.stderr
    jobs = jobs_of_run(api, run)
    small = discover([str(tmp_path / "photos")], recursive=False, extensions=EXTENSIONS["image"])
    assert len(jobs) == len(group(small, AUTO_PER_JOB, AUTO_JOB_BYTES)) < 10  # small files share jobs
    assert sorted(o.source for j in jobs for o in j.outputs) == names  # the job's sources are the files

    again = cli(stack, *args, "--allow-failures")
    assert again.returncode == 0, again.stderr
    assert "0 ended in this run, 31 were done before" in again.stderr
    assert len(read_lines(out)) == 31 and len(jobs_of_run(api, run)) == len(jobs)


def test_a_killed_run_resumes_with_every_input_once_and_no_second_job(
    stack: Stack, api: dlpipe.Client, tmp_path: Path
) -> None:
    names = photo_folder(tmp_path / "photos")
    out, run = tmp_path / "results.jsonl", uuid.uuid4().hex
    args = submit_args(tmp_path / "photos", out, run, "--per-job", "2", "--concurrency", "2")
    proc = start_cli(stack, args)
    try:
        wait_for_results(out, 4)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = read_lines(out)
    assert 4 <= len(before) < 30, "the run ended before it was killed"

    rerun = cli(stack, *args)
    assert rerun.returncode == 0, rerun.stderr
    counts = Counter(line["source"] for line in read_lines(out))
    assert sorted(counts) == names and set(counts.values()) == {1}, counts
    assert all(line["status"] == "succeeded" for line in read_lines(out))
    jobs = jobs_of_run(api, run)
    sources = Counter(o.source for j in jobs for o in j.outputs)
    assert sorted(sources) == names and set(sources.values()) == {1}, "an input went into two jobs"
    assert len(jobs) == 15


def test_jobs_job_watch_and_cancel(stack: Stack, api: dlpipe.Client, tmp_path: Path) -> None:
    fhd = ("fhd.jpg", photo_bytes("astronaut.png", size=FHD))
    job = api.submit("image-classify", files=[fhd] * 100)  # seconds of work: still running when watched
    watched = cli(stack, "job", job.id, "--watch")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout)["status"] == "succeeded"
    events = watched.stderr.splitlines()
    assert events[-1] == "completed succeeded 100/100", watched.stderr
    outputs = [line for line in events if line.startswith("output ")]
    assert outputs and all(line.endswith(": succeeded") for line in outputs), watched.stderr
    listed = cli(
        stack, "jobs", "--pipeline", "image-classify", "--status", "succeeded", "--json", "--limit", "200"
    )
    assert listed.returncode == 0 and job.id in {json.loads(x)["id"] for x in listed.stdout.splitlines()}
    table = cli(stack, "jobs", "--limit", "5")
    assert table.returncode == 0 and table.stdout.startswith("ID")
    ended = cli(stack, "cancel", job.id)
    assert ended.returncode == 1 and "already ended" in ended.stderr

    big = api.submit("image-classify", files=[fhd] * 150)
    canceled = cli(stack, "cancel", big.id)
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "canceled"
    assert cli(stack, "job", "0" * 32).returncode == 1


def test_bad_arguments_exit_2(stack: Stack, tmp_path: Path) -> None:
    missing = cli(stack, "submit", "image-classify", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    unknown = cli(stack, "submit", "no-such-pipeline", str(tmp_path))
    assert unknown.returncode == 2 and "no pipeline" in unknown.stderr
    metadata = cli(stack, "submit", "image-classify", str(tmp_path), "--metadata", "[1]")
    assert metadata.returncode == 2 and "JSON object" in metadata.stderr


def model_workers(stack: Stack) -> list[psutil.Process]:
    """The stack's model worker processes (`dlpipe worker model` and its replicas)."""
    found = []
    for child in psutil.Process(stack.proc.pid).children(recursive=True):
        if "worker" in (cmd := child.cmdline()) and "model" in cmd:
            found += [child, *child.children(recursive=True)]
    assert found, "no model worker under dlpipe up"
    return found


def pause(processes: list[psutil.Process]) -> list[psutil.Process]:
    for process in processes:
        process.suspend()
    return processes


def test_ctrl_c_leaves_a_valid_file_and_says_how_to_resume(stack: Stack, tmp_path: Path) -> None:
    # Enough photos that the run is still going when the first results are seen (30 were done
    # in 0.9 s in CI, before the poller saw two of them).
    names = photo_folder(tmp_path / "photos", count=150)
    out = tmp_path / "results.jsonl"
    args = submit_args(tmp_path / "photos", out, uuid.uuid4().hex, "--per-job", "1", "--concurrency", "1")
    proc = start_cli(
        stack,
        args,
        text=True,
        # A shell's background job (CI may start the suite so) ignores SIGINT, and a Python started
        # with it ignored never raises KeyboardInterrupt: give the CLI the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    paused: list[psutil.Process] = []
    try:
        wait_for_results(out, 2)
        # The model worker paused, so the run cannot finish before the Ctrl-C reaches it.
        paused = pause(model_workers(stack))
        proc.send_signal(signal.SIGINT)
        # The Ctrl-C given, let the job in flight end.
        for worker in paused:
            worker.resume()
        paused = []
        _, stderr = proc.communicate(timeout=60)
    finally:
        for worker in paused:
            worker.resume()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr and str(out) in stderr
    lines = read_lines(out)  # every line whole JSON
    assert 2 <= len(lines) < len(names) and len({line["source"] for line in lines}) == len(lines)
    rerun = cli(stack, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(line["source"] for line in read_lines(out)) == names
