"""End to end: video-classify through HTTP into the running stack: a video under the data root
and an uploaded one, each frame classified by the real EfficientNet-Lite0, one output per video
keyed by frame time."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.support.classify import CAT_CLASSES, COFFEE_CLASSES, wait_final
from tests.support.videos import cat_then_coffee

pytestmark = pytest.mark.e2e

URL = "/v1/pipelines/video-classify/jobs"


def labels(frame: dict[str, Any]) -> list[int]:
    return [label["index"] for label in frame["labels"]]


def test_a_video_under_the_data_root_is_classified_frame_by_frame(client: httpx.Client, stack: Stack) -> None:
    assert stack.data_root is not None
    (stack.data_root / "clips").mkdir(exist_ok=True)
    (stack.data_root / "clips" / "scene.mp4").write_bytes(cat_then_coffee())
    body = {"inputs": [{"video_path": "clips/scene.mp4", "interval": {"start": 0.0, "end": 3.0}, "fps": 2}]}
    response = client.post(URL, json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["progress"] == {"done": 0, "total": 6} and len(job["outputs"]) == 1

    done = wait_final(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": 6, "total": 6}
    (output,) = done["outputs"]
    assert output["index"] == 0 and output["status"] == "succeeded" and output["source"] == "clips/scene.mp4"
    frames = output["result"]["frames"]
    assert list(frames) == ["0.000", "0.500", "1.000", "1.500", "2.000", "2.500"]
    assert output["result"]["errors"] == {}
    for key in ("0.000", "0.500", "1.000"):  # the cat until 1.5 s
        assert labels(frames[key])[0] in CAT_CLASSES, (key, frames[key])
    for key in ("1.500", "2.000", "2.500"):  # then the espresso cup
        assert labels(frames[key])[0] in COFFEE_CLASSES, (key, frames[key])
    assert all(len(f["labels"]) == 5 for f in frames.values())


def test_an_uploaded_video_with_options(client: httpx.Client) -> None:
    files = [("files", ("scene.mkv", cat_then_coffee("matroska"), "video/x-matroska"))]
    options = {"interval": {"start": 1.0}, "fps": 1}  # 1.0 and 2.0 s, to the video's end
    response = client.post(URL, files=files, data={"options": json.dumps(options)})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["progress"]["total"] == 2

    done = wait_final(client, job["id"])
    assert done["status"] == "succeeded", done
    (output,) = done["outputs"]
    assert output["source"] == "scene.mkv"
    frames = output["result"]["frames"]
    assert list(frames) == ["1.000", "2.000"]
    assert labels(frames["1.000"])[0] in CAT_CLASSES and labels(frames["2.000"])[0] in COFFEE_CLASSES


def test_the_interval_is_clipped_to_the_video_and_bad_requests_are_refused(
    client: httpx.Client, stack: Stack
) -> None:
    assert stack.data_root is not None
    (stack.data_root / "clips").mkdir(exist_ok=True)
    (stack.data_root / "clips" / "scene.mp4").write_bytes(cat_then_coffee())
    response = client.post(URL, json={"inputs": [{"video_path": "clips/scene.mp4", "interval": {"end": 60}}]})
    assert response.status_code == 202, response.text
    assert response.json()["progress"]["total"] == 3  # the interval is clipped to the 3 s video

    response = client.post(URL, json={"inputs": [{"video_path": "clips/scene.mp4", "fps": 31}]})
    assert response.status_code == 422 and response.json()["field"] == "inputs[0].fps"
    info = client.get("/v1/pipelines/video-classify").json()
    assert info["input"]["json_fields"] == ["video_path", "interval", "fps"]
    assert info["input"]["multipart_field"] == "files" and info["input"]["options_field"] == "options"
