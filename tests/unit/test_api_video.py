"""Video inputs at the API: a `video_path` or an upload is probed, becomes one item per frame
time (the upload stored once for the job), shows as one output; bad requests are 422s naming
the field. Against fakeredis; the videos are real (made with PyAV)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from shared import codecs, keys
from shared.settings import Settings
from tests.support.api import PIPELINES_YAML, fake_factory, make_settings, running, write_pipelines
from tests.support.videos import cat_then_coffee

pytestmark = pytest.mark.anyio

VIDEO_PIPELINE = """\
  vid:
    description: A test video pipeline.
    input: video
    stages:
      - {name: frame, kind: preprocess, fn: "json:dumps"}
      - {name: m, kind: model, model: m1}
      - {name: post, kind: postprocess, fn: "json:loads"}
"""
URL = "/v1/pipelines/vid/jobs"
MAX_INPUTS = 10


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """<tmp>/data: clips/scene.mp4 (3 s), clips/notes.mp4 (text), clips/empty/; <tmp>/outside.mp4."""
    data = tmp_path / "data"
    (data / "clips" / "empty").mkdir(parents=True)
    (data / "clips" / "scene.mp4").write_bytes(cat_then_coffee())
    (data / "clips" / "notes.mp4").write_text("not a video")
    (tmp_path / "outside.mp4").write_bytes(cat_then_coffee())
    return data


def video_settings(tmp_path: Path, **overrides: Any) -> Settings:
    pipelines = write_pipelines(tmp_path, PIPELINES_YAML + VIDEO_PIPELINE)
    return make_settings(pipelines, max_inputs_per_job=MAX_INPUTS, max_input_bytes=1024 * 1024, **overrides)


@pytest.fixture
def settings(tmp_path: Path, root: Path) -> Settings:
    return video_settings(tmp_path, data_root=root)


@pytest.fixture
async def api(settings: Settings, fake_server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as client:
        yield client


def stored_items(client: fakeredis.FakeRedis, job_id: str) -> list[dict[bytes, bytes]]:
    total = int(client.hget(keys.job(job_id), "total"))
    return [client.hgetall(keys.item(job_id, i)) for i in range(total)]


def stored_inputs(client: fakeredis.FakeRedis, job_id: str) -> list[Any]:
    return [codecs.decode(item[keys.INPUT_FIELD.encode()]) for item in stored_items(client, job_id)]


def no_job_written(client: fakeredis.FakeRedis) -> bool:
    return not client.keys("dlpipe:job:*") and not client.keys("dlpipe:item:*")


async def test_a_video_path_becomes_one_item_per_frame_time_and_one_output(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    body = {"inputs": [{"video_path": "clips/scene.mp4", "interval": {"start": 0, "end": 3}, "fps": 2}]}
    response = await api.post(URL, json=body)
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["progress"] == {"done": 0, "total": 6}
    assert view["outputs"] == [
        {"index": 0, "status": "pending", "result": None, "error": None, "source": "clips/scene.mp4"}
    ]
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert stored_inputs(sync_redis, view["id"]) == [{"video_path": "clips/scene.mp4", "t": t} for t in times]
    groups = json.loads(sync_redis.hget(keys.job(view["id"]), "groups"))
    assert groups == [
        {
            "input": 0,
            "first": 0,
            "count": 6,
            "field": "frames",
            "keys": ["0.000", "0.500", "1.000", "1.500", "2.000", "2.500"],
        }
    ]
    assert not sync_redis.keys("dlpipe:job:*:blob:*")  # a path is read where it lies
    assert (await api.get(f"/v1/jobs/{view['id']}")).json() == view


async def test_by_default_the_whole_video_at_one_frame_a_second(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    response = await api.post(URL, json={"inputs": [{"video_path": "clips/scene.mp4"}]})
    assert response.status_code == 202, response.text
    assert [x["t"] for x in stored_inputs(sync_redis, response.json()["id"])] == [0.0, 1.0, 2.0]


async def test_the_interval_is_clipped_to_the_video_and_inputs_keep_their_order(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    inputs = [
        {"video_path": "clips/scene.mp4", "interval": {"start": 2.2, "end": 60}, "fps": 2},  # 2.2, 2.7
        {"video_path": "clips/scene.mp4", "interval": {"end": 1.0}, "fps": 3},  # 0, 1/3, 2/3
    ]
    response = await api.post(URL, json={"inputs": inputs})
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["progress"]["total"] == 5 and [o["index"] for o in view["outputs"]] == [0, 1]
    assert [x["t"] for x in stored_inputs(sync_redis, view["id"])] == pytest.approx(
        [2.2, 2.7, 0, 1 / 3, 2 / 3]
    )
    groups = json.loads(sync_redis.hget(keys.job(view["id"]), "groups"))
    assert [(g["input"], g["first"], g["keys"]) for g in groups] == [
        (0, 0, ["2.200", "2.700"]),
        (1, 2, ["0.000", "0.333", "0.667"]),
    ]


async def test_an_uploaded_video_is_stored_once_and_its_frames_refer_to_it(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    video = cat_then_coffee()
    files = [("files", ("scene.mp4", video, "video/mp4"))]
    options = json.dumps({"interval": {"start": 1, "end": 2.5}, "fps": 2})
    response = await api.post(URL, files=files, data={"options": options})
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["progress"]["total"] == 3 and len(view["outputs"]) == 1
    assert view["outputs"][0]["source"] == "scene.mp4"
    (blob_key,) = sync_redis.keys("dlpipe:job:*:blob:*")
    assert blob_key.decode() == keys.job_blob(view["id"], 0) and sync_redis.get(blob_key) == video
    assert 0 < sync_redis.ttl(blob_key) <= Settings().job_ttl_s
    items = stored_items(sync_redis, view["id"])
    assert [codecs.decode(i[keys.INPUT_FIELD.encode()]) for i in items] == [
        {"t": 1.0},
        {"t": 1.5},
        {"t": 2.0},
    ]
    assert {i[keys.BLOB_FIELD.encode()] for i in items} == {blob_key}


async def test_uploads_without_options_take_the_whole_video_at_one_frame_a_second(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    files = [
        ("files", ("a.mp4", cat_then_coffee(), "video/mp4")),
        ("files", ("b.mkv", cat_then_coffee("matroska"))),
    ]
    response = await api.post(URL, files=files)
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["progress"]["total"] == 6 and [o["source"] for o in view["outputs"]] == ["a.mp4", "b.mkv"]
    assert len(sync_redis.keys("dlpipe:job:*:blob:*")) == 2


@pytest.mark.parametrize(
    ("inp", "field", "words"),
    [
        ({"video_path": "clips/notes.mp4"}, "inputs[0].video_path", "not a readable video"),
        ({"video_path": "clips/scene.mp4", "fps": 0}, "inputs[0].fps", "greater than 0"),
        ({"video_path": "clips/scene.mp4", "fps": 31}, "inputs[0].fps", "less than or equal to 30"),
        (
            {"video_path": "clips/scene.mp4", "interval": {"start": 2, "end": 2}},
            "inputs[0].interval",
            "end (2.0) must be greater than start (2.0)",
        ),
        (
            {"video_path": "clips/scene.mp4", "interval": {"start": 2, "end": 1}},
            "inputs[0].interval",
            "must be greater than start",
        ),
        (
            {"video_path": "clips/scene.mp4", "interval": {"start": -1}},
            "inputs[0].interval.start",
            "greater than",
        ),
        (
            {"video_path": "clips/scene.mp4", "interval": {"start": 3}},
            "inputs[0].interval",
            "at or after the video's end (3.000 s)",
        ),
        (
            {"video_path": "clips/scene.mp4", "fps": 4},
            "inputs[0].fps",
            "12 frames (3.000 s at 4 fps), more than this job can take (at most 10 inputs per job",
        ),
        ({"video_path": "../outside.mp4"}, "inputs[0].video_path", "outside the data root"),
        ({"video_path": "/etc/passwd"}, "inputs[0].video_path", "outside the data root"),
        ({"video_path": "clips/missing.mp4"}, "inputs[0].video_path", "no such file"),
        ({"video_path": "clips/empty"}, "inputs[0].video_path", "not a file"),
        ({"video_path": "clips/scene.mp4", "image_base64": "AAAA"}, "inputs[0].image_base64", "extra"),
        ({"fps": 2}, "inputs[0].video_path", "required"),
    ],
)
async def test_bad_video_inputs_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, inp: dict[str, Any], field: str, words: str
) -> None:
    response = await api.post(URL, json={"inputs": [inp]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and words in body["detail"], body
    assert no_job_written(sync_redis)


async def test_frames_of_all_videos_count_toward_the_limit(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    one = {"video_path": "clips/scene.mp4", "fps": 2}  # 6 frames: one fits, two do not
    assert (await api.post(URL, json={"inputs": [one]})).status_code == 202
    response = await api.post(URL, json={"inputs": [one, one]})
    assert response.status_code == 422 and response.json()["field"] == "inputs[1].fps"
    files = [("files", (name, cat_then_coffee(), "video/mp4")) for name in ("a.mp4", "b.mp4")]
    response = await api.post(URL, files=files, data={"options": '{"fps": 2}'})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "options.fps" and body["detail"].startswith("options.fps: files[1]: 6 frames"), (
        body
    )


@pytest.mark.parametrize(
    ("files", "data", "field", "words"),
    [
        ([("files", ("a.mp4", b"not a video at all"))], {}, "files[0]", "not a readable video"),
        ([("files", ("a.m3u8", b"#EXTM3U\nfile:///etc/passwd\n"))], {}, "files[0]", "not a supported video"),
        (
            [("files", ("a.mp4", cat_then_coffee()))],
            {"options": '{"fps": 0}'},
            "options.fps",
            "greater than 0",
        ),
        (
            [("files", ("a.mp4", cat_then_coffee()))],
            {"options": '{"interval": {"start": 1, "end": 0.5}}'},
            "options.interval",
            "must be greater than start",
        ),
        ([("files", ("a.mp4", cat_then_coffee()))], {"options": "{fps: 2"}, "options", "not valid JSON"),
        ([("files", ("a.mp4", cat_then_coffee()))], {"options": "[2]"}, "options", "JSON object"),
        (
            [("files", ("a.mp4", cat_then_coffee()))],
            {"options": '{"fps": 2, "speed": 1}'},
            "options.speed",
            "extra",
        ),
        ([("files", ("a.mp4", cat_then_coffee()))], {"options": '{"fps": 11}'}, "options.fps", "33 frames"),
    ],
)
async def test_bad_uploads_and_options_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, files: list, data: dict, field: str, words: str
) -> None:
    response = await api.post(URL, files=files, data=data)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and words in body["detail"], body
    assert no_job_written(sync_redis)


async def test_options_are_refused_by_pipelines_that_take_none(api: httpx.AsyncClient) -> None:
    files = [("files", ("a.jpg", b"\xff\xd8image", "image/jpeg"))]
    response = await api.post("/v1/pipelines/img/jobs", files=files, data={"options": '{"fps": 2}'})
    assert response.status_code == 422 and response.json()["field"] == "options"


async def test_video_paths_are_refused_without_a_data_root(
    tmp_path: Path, root: Path, fake_server: fakeredis.FakeServer
) -> None:
    app = create_app(video_settings(tmp_path), redis_factory=fake_factory(fake_server))
    async with running(app) as api:
        response = await api.post(URL, json={"inputs": [{"video_path": "clips/scene.mp4"}]})
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "inputs[0].video_path"
        assert "DLPIPE_DATA_ROOT is not set" in response.json()["detail"]
        # Uploads need no data root.
        files = [("files", ("a.mp4", cat_then_coffee(), "video/mp4"))]
        assert (await api.post(URL, files=files)).status_code == 202


async def test_the_pipeline_description_lists_the_video_fields(api: httpx.AsyncClient) -> None:
    info = (await api.get("/v1/pipelines/vid")).json()
    assert info["input"] == {
        "kind": "video",
        "json_fields": ["video_path", "interval", "fps"],
        "multipart_field": "files",
        "options_field": "options",
        "max_inputs": MAX_INPUTS,
        "max_input_bytes": 1024 * 1024,
    }


async def test_openapi_shows_the_video_input_and_the_upload_options(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert set(schemas["VideoInput"]["properties"]) == {"video_path", "interval", "fps"}
    assert schemas["VideoInput"]["required"] == ["video_path"]
    assert schemas["VideoInput"]["properties"]["fps"]["maximum"] == 30
    assert set(schemas["Interval"]["properties"]) == {"start", "end"}
    assert set(schemas["VideoOptions"]["properties"]) == {"interval", "fps"}
    content = doc["paths"][URL]["post"]["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/VideoJobUpload"}
    options = schemas["VideoJobUpload"]["properties"]["options"]["anyOf"][0]
    assert options["contentSchema"] == {"$ref": "#/components/schemas/VideoOptions"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/VideoJobRequest"}
    examples = content["application/json"]["examples"].values()
    assert any("video_path" in e["value"]["inputs"][0] for e in examples)
