"""Files as outputs, without images or models: names, the stored form, lifting files out of a
result, and the whole way through on fakeredis (the API takes a job, a preprocess worker's step
runs its one stage, COMPLETE_STAGE stores the files, the API serves them)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from PIL import Image

from services.api.app import create_app
from shared import files, keys
from shared.files import FileError, OutputFile
from shared.pipeline_spec import load_pipelines
from tests.support.api import fake_factory, make_settings, running, write_pipelines
from tests.support.output_files import CAP, PIPELINES, assert_expire_together, small_jpeg
from workers.output_files import lift
from workers.preprocess import PreprocessWorker
from workers.store import Store

pytestmark = pytest.mark.anyio

# -- names, content types, the stored form ------------------------------------------


@pytest.mark.parametrize("name", ["blurred.jpg", "a", "frame-0.500.jpg", "A_b-c.d", "x" * 128, "9.png"])
def test_safe_names_pass(name: str) -> None:
    assert files.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "a/b.jpg",
        "..%2f",
        "a\\b",
        "a b.jpg",
        'a".jpg',
        "é.jpg",
        "x" * 129,
        "a\nb",
        "-rf",
        None,
        3,
    ],
)
def test_unsafe_names_are_refused(name: Any) -> None:
    with pytest.raises(FileError, match="is not allowed"):
        files.check_name(name)


def test_content_types_are_checked_and_lower_cased() -> None:
    assert files.check_content_type("Image/JPEG") == "image/jpeg"
    assert files.check_content_type("text/plain;charset=utf-8") == "text/plain; charset=utf-8"
    for bad in ["jpeg", "text/html\r\nX-Evil: 1", "a/b/c", "", "text/plain; q=1", 7]:
        with pytest.raises(FileError):
            files.check_content_type(bad)


def test_sniffing_knows_the_common_images_and_falls_back_to_octet_stream() -> None:
    assert files.sniff(small_jpeg()) == "image/jpeg"
    out = io.BytesIO()
    Image.new("RGB", (2, 2)).save(out, "PNG")
    assert files.sniff(out.getvalue()) == "image/png"
    assert files.sniff(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert files.sniff(b"<html>") == files.sniff(b"") == "application/octet-stream"


def test_the_stored_form_round_trips_any_bytes() -> None:
    data = b"\n\x00line\nmore\xff"
    stored = files.encode("Application/Octet-Stream", data)
    assert stored.startswith(b"application/octet-stream\n")
    assert files.decode(stored) == ("application/octet-stream", data)
    assert files.decode(files.encode("image/jpeg", b"")) == ("image/jpeg", b"")
    for bad in [b"no newline", b"\xff\xfe/x\nabc", b"not a type\nabc"]:
        with pytest.raises(FileError):
            files.decode(bad)


# -- lifting files out of a result --------------------------------------------------


def test_a_result_without_files_is_left_as_it_is() -> None:
    for value in [{"n": 1}, [1, 2], "text", None]:
        lifted = lift(value, job_id="j", index=0)
        assert lifted.result is value and lifted.manifest == "" and lifted.payload == b""


def test_files_are_described_in_the_json_and_laid_out_for_the_script() -> None:
    jpeg = small_jpeg()
    lifted = lift(
        {"n": 2, "files": [OutputFile("a.jpg", jpeg), OutputFile("m.png", b"P", "image/png")]},
        job_id="j1",
        index=3,
    )
    assert lifted.result == {
        "n": 2,
        "files": [
            {
                "name": "a.jpg",
                "content_type": "image/jpeg",
                "size": len(jpeg),
                "url": "/v1/jobs/j1/outputs/3/files/a.jpg",
            },
            {
                "name": "m.png",
                "content_type": "image/png",
                "size": 1,
                "url": "/v1/jobs/j1/outputs/3/files/m.png",
            },
        ],
    }
    first, second = files.encode("image/jpeg", jpeg), files.encode("image/png", b"P")
    assert lifted.manifest == f"3/a.jpg {len(first)} 3/m.png {len(second)}"
    assert lifted.payload == first + second and lifted.stored_bytes == len(first + second)


@pytest.mark.parametrize(
    ("listed", "reason"),
    [
        (["ghost.jpg"], "names the file 'ghost.jpg' but did not write it"),
        ([{"name": "ghost.jpg", "url": "/v1/x"}], "names the file 'ghost.jpg' but did not write it"),
        ([OutputFile("a/b.jpg", b"x")], "is not allowed"),
        ([OutputFile("a.jpg", b"x"), OutputFile("a.jpg", b"y")], "gives the file 'a.jpg' twice"),
        ([OutputFile("a.jpg", "text")], "its data is a str, not bytes"),  # type: ignore[arg-type]
        ([OutputFile("a.bin", b"x" * 11)], r"is 11 bytes, over the 10-byte cap .*MAX_OUTPUT_FILE_BYTES"),
        ([OutputFile("a.bin", b"x", "html")], "file 'a.bin': content type 'html' is not type/subtype"),
        ([OutputFile(f"{i}.bin", b"") for i in range(33)], "gives 33 files, over the 32"),
    ],
)
def test_a_bad_file_fails_with_its_reason(listed: list[Any], reason: str) -> None:
    with pytest.raises(FileError, match=reason):
        lift({"files": listed}, job_id="j", index=0, max_bytes=10)
    with pytest.raises(FileError, match="is a dict, not a list"):
        lift({"files": {"a.jpg": b"x"}}, job_id="j", index=0)


# -- through the API and a worker, on fakeredis ---------------------------------------


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    return write_pipelines(tmp_path, PIPELINES)


@pytest.fixture
async def api(fake_server: fakeredis.FakeServer, pipelines_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(pipelines_file, max_input_bytes=1000)
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as client:
        yield client


@pytest.fixture
def worker(client: fakeredis.FakeRedis, pipelines_file: Path) -> PreprocessWorker:
    settings = make_settings(pipelines_file, read_block_ms=1)
    store = Store(client, load_pipelines(pipelines_file), 3600, max_file_bytes=CAP)
    cpu = PreprocessWorker(store, settings, "c1")
    cpu.setup()
    return cpu


async def run_job(api: httpx.AsyncClient, worker: PreprocessWorker, *texts: str) -> dict[str, Any]:
    response = await api.post("/v1/pipelines/give/jobs", json={"inputs": [{"text": t} for t in texts]})
    assert response.status_code == 202, response.text
    while worker.run_once(block_ms=1):
        pass
    return (await api.get(f"/v1/jobs/{response.json()['id']}")).json()


async def test_files_are_stored_named_in_the_json_and_served(
    api: httpx.AsyncClient, worker: PreprocessWorker
) -> None:
    job = await run_job(api, worker, "jpeg", "two", "none")
    assert job["status"] == "succeeded", job
    (described,) = job["outputs"][0]["result"]["files"]
    assert described == {
        "name": "a.jpg",
        "content_type": "image/jpeg",
        "size": len(small_jpeg()),
        "url": f"/v1/jobs/{job['id']}/outputs/0/files/a.jpg",
    }
    served = await api.get(described["url"])
    assert served.status_code == 200 and served.content == small_jpeg()
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"].startswith("default-src 'none'")
    assert served.headers["content-disposition"] == 'inline; filename="a.jpg"'
    text, binary = job["outputs"][1]["result"]["files"]
    served = await api.get(text["url"])
    assert served.text == "hello\n" and served.headers["content-type"].startswith("text/plain")
    assert served.headers["content-disposition"] == 'attachment; filename="a.txt"'  # not a page
    assert (await api.get(binary["url"])).content == b"\x00\n\x01"
    assert binary["content_type"] == "application/octet-stream"  # sniffed: nothing known
    assert job["outputs"][2]["result"] == {"n": 0}


async def test_unknown_jobs_outputs_and_names_are_404_with_a_reason(
    api: httpx.AsyncClient, worker: PreprocessWorker
) -> None:
    job = await run_job(api, worker, "jpeg")
    base = f"/v1/jobs/{job['id']}/outputs"
    cases = {
        "/v1/jobs/nope/outputs/0/files/a.jpg": "no job 'nope'",
        "/v1/jobs/bad%20id/outputs/0/files/a.jpg": "no job 'bad id'",
        f"{base}/1/files/a.jpg": "has no output 1 (its items: 0 to 0)",
        f"{base}/-1/files/a.jpg": "has no output -1",
        f"{base}/0/files/b.jpg": "has no file 'b.jpg'",
        f"{base}/0/files/a%20b.jpg": "not a file name",
        f"{base}/0/files/.a.jpg": "not a file name",
    }
    for path, reason in cases.items():
        response = await api.get(path)
        assert response.status_code == 404, (path, response.text)
        assert reason in response.json()["detail"], (path, response.text)
    assert (await api.get(f"{base}/x/files/a.jpg")).status_code == 422  # not an index at all


async def test_a_file_too_large_or_not_written_fails_its_item_with_the_reason(
    api: httpx.AsyncClient, worker: PreprocessWorker, client: fakeredis.FakeRedis
) -> None:
    job = await run_job(api, worker, "big", "ghost", "jpeg")
    assert job["status"] == "succeeded" and job["progress"] == {"done": 3, "total": 3}
    big, ghost, fine = job["outputs"]
    assert big["status"] == "failed" and big["result"] is None
    assert big["error"] == (
        f"stage 'give': file 'big.bin' is {CAP + 1} bytes, over the {CAP}-byte cap on an output file "
        "(DLPIPE_MAX_OUTPUT_FILE_BYTES)"
    )
    assert ghost["status"] == "failed"
    assert ghost["error"].startswith("stage 'give': its result names the file 'ghost.jpg' but did not write")
    assert fine["status"] == "succeeded"
    stored = client.hkeys(keys.job_files(job["id"]))
    assert stored == [b"2/a.jpg"]  # nothing of the failed items


async def test_files_count_in_the_byte_budget_while_open_and_expire_with_the_job(
    api: httpx.AsyncClient, worker: PreprocessWorker, client: fakeredis.FakeRedis
) -> None:
    response = await api.post("/v1/pipelines/give/jobs", json={"inputs": [{"text": "jpeg"}, {"text": "two"}]})
    job_id = response.json()["id"]
    inputs = int(client.hget(keys.job(job_id), "bytes"))
    entries = worker.store.read(keys.CPU_GROUP, "c1", worker.streams, 1, None)
    worker.process(entries)  # the first item only: the job is still open
    stored = len(client.hget(keys.job_files(job_id), "0/a.jpg"))
    assert int(client.hget(keys.job(job_id), "bytes")) == inputs + stored
    assert int(client.hget(keys.BYTES, "held")) == inputs + stored
    job_ms, files_ms = client.pttl(keys.job(job_id)), client.pttl(keys.job_files(job_id))
    assert files_ms > 0 and abs(files_ms - job_ms) < 1000  # as long as the open job's record
    while worker.run_once(block_ms=1):
        pass
    assert int(client.hget(keys.BYTES, "held")) == 0  # all given back as the job ended
    assert_expire_together(client, keys.job_files(job_id), keys.job_outputs(job_id))
    assert client.hlen(keys.job_files(job_id)) == 3


async def test_a_canceled_jobs_files_expire_with_its_outputs(
    api: httpx.AsyncClient, worker: PreprocessWorker, client: fakeredis.FakeRedis
) -> None:
    response = await api.post("/v1/pipelines/give/jobs", json={"inputs": [{"text": "jpeg"}, {"text": "two"}]})
    job_id = response.json()["id"]
    worker.process(worker.store.read(keys.CPU_GROUP, "c1", worker.streams, 1, None))
    assert (await api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
    assert_expire_together(client, keys.job_files(job_id), keys.job_outputs(job_id))
    assert int(client.hget(keys.BYTES, "held")) == 0
    assert (await api.get(f"/v1/jobs/{job_id}/outputs/0/files/a.jpg")).content == small_jpeg()
