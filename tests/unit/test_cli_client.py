"""dlpipe submit's parts without a server: which files a PATH names, how they are grouped into
jobs, each job's Idempotency-Key, and the results file a rerun resumes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import build_parser
from services.cli_client.inputs import EXTENSIONS, InputError, discover, group, job_key
from services.cli_client.outfile import ResultsFile


def make(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (10 + len(name)))


def test_folders_give_their_files_of_the_input_kind_sorted_once(tmp_path: Path) -> None:
    make(tmp_path, ["b.jpg", "a.PNG", "notes.md", ".DS_Store", ".hidden/x.jpg", "sub/c.jpg", "sub/.d.jpg"])
    image = EXTENSIONS["image"]
    top = tmp_path.as_posix()
    assert [s.name for s in discover([top], recursive=False, extensions=image)] == [
        f"{top}/a.PNG",
        f"{top}/b.jpg",
    ]
    names = [s.name for s in discover([top, f"{top}/b.jpg"], recursive=True, extensions=image)]
    assert names == [f"{top}/a.PNG", f"{top}/b.jpg", f"{top}/sub/c.jpg"]  # b.jpg named twice: once
    assert len(discover([top], recursive=False, extensions=None)) == 3  # --all-files (hidden still not)
    assert [s.name for s in discover([f"{top}/notes.md"], recursive=False, extensions=image)] == [
        f"{top}/notes.md"
    ]
    with pytest.raises(InputError, match="no such file"):
        discover([f"{top}/missing"], recursive=False, extensions=image)


def test_groups_are_made_the_same_way_by_count_and_bytes(tmp_path: Path) -> None:
    make(tmp_path, [f"{i:02d}.jpg" for i in range(7)])
    sources = discover([tmp_path.as_posix()], recursive=False, extensions=None)
    assert [len(g) for g in group(sources, 3, 10**9)] == [3, 3, 1]
    assert [len(g) for g in group(sources, 3, 2 * sources[0].size)] == [2, 2, 2, 1]
    assert group(sources, 3, 10**9) == group(list(sources), 3, 10**9)


def test_the_key_follows_the_request_and_the_contents() -> None:
    files = [("a.jpg", b"1"), ("b.jpg", b"2")]
    key = job_key("image-classify", {"metadata": {"a": 1}}, files)
    assert key == job_key("image-classify", {"metadata": {"a": 1}}, list(files)) and len(key) <= 255
    assert key != job_key("image-classify", {"metadata": {"a": 2}}, files)
    assert key != job_key("image-tag", {"metadata": {"a": 1}}, files)
    assert key != job_key("image-classify", {"metadata": {"a": 1}}, [("a.jpg", b"1"), ("b.jpg", b"3")])
    assert key != job_key("image-classify", {"metadata": {"a": 1}}, [("a.jpg", b"1"), ("c.jpg", b"2")])


def test_the_results_file_keeps_whole_lines_and_cuts_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    out = ResultsFile(path)
    assert out.load() == {}
    out.open()
    out.write([{"source": "a", "status": "succeeded"}, {"source": "b", "status": "failed", "error": "x"}])
    out.close()
    with path.open("ab") as f:
        f.write(b'{"source": "c", "sta')  # killed mid-write
    assert ResultsFile(path).load() == {"a": "succeeded", "b": "failed"}
    assert path.read_bytes().endswith(b"}\n")
    again = ResultsFile(path)
    again.open()
    again.write([{"source": "c", "status": "succeeded"}])
    again.close()
    assert ResultsFile(path).load() == {"a": "succeeded", "b": "failed", "c": "succeeded"}


def test_the_commands_parse() -> None:
    args = build_parser().parse_args(
        ["submit", "image-classify", "a", "b", "--concurrency", "3", "--out", "r.jsonl"]
    )
    assert (args.pipeline, args.paths, args.in_flight, args.out) == (
        "image-classify",
        ["a", "b"],
        3,
        Path("r.jsonl"),
    )
    assert build_parser().parse_args(["jobs", "--status", "failed"]).status == "failed"
    assert build_parser().parse_args(["job", "x", "--watch"]).watch
    assert build_parser().parse_args(["cancel", "x", "--url", "http://h:1"]).url == "http://h:1"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "image-classify", "a", "--concurrency", "0"])


def test_watch_falls_back_to_long_polls_on_an_api_without_the_event_stream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import httpx

    import dlpipe
    from services.cli_client.jobs import _watch

    base = {"id": "j1", "pipeline": "image-classify", "created_at": "2026-01-01T00:00:00Z"}
    states = [
        {**base, "status": "running", "progress": {"done": 1, "total": 2}},
        {**base, "status": "succeeded", "progress": {"done": 2, "total": 2}},
    ]
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json=states[0] if len(paths) < 4 else states[1])

    client = dlpipe.Client("http://api.test", transport=httpx.MockTransport(handler))
    final = _watch(client, dlpipe.JobView.model_validate(states[0]))
    assert final.status is dlpipe.JobStatus.succeeded
    assert paths[0] == "/v1/jobs/j1/events" and set(paths[1:]) == {"/v1/jobs/j1"}
    assert capsys.readouterr().err.splitlines() == ["progress 1/2", "progress 2/2", "completed succeeded 2/2"]
