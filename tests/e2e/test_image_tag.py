"""End to end: photos through HTTP into the running stack's `image-tag` pipeline (two models)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.support.photos import corrupt_bytes, photo_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

URL = "/v1/pipelines/image-tag/jobs"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_final(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(final, timeout_s=timeout_s, what=f"job {job_id} to finish")


def tag(client: httpx.Client, images: list[bytes]) -> list[dict[str, Any]]:
    response = client.post(URL, json={"inputs": [{"image_base64": b64(image)} for image in images]})
    assert response.status_code == 202, response.text
    done = wait_final(client, response.json()["id"])
    assert [o["index"] for o in done["outputs"]] == list(range(len(images)))
    return done["outputs"]


def test_a_cat_is_an_animal_and_a_motorbike_a_vehicle(client: httpx.Client) -> None:
    cat, motorbike = tag(client, [photo_bytes("chelsea.png"), photo_bytes("motorcycle_left.png")])
    for output, first in ((cat, "animal"), (motorbike, "vehicle")):
        assert output["status"] == "succeeded", output
        tags, labels = output["result"]["tags"], output["result"]["labels"]
        assert tags[0]["tag"] == first, tags
        scores = [t["score"] for t in tags]
        assert len(tags) == 3 and scores == sorted(scores, reverse=True)
        assert len(labels) == 5 and {"index", "label", "score"} <= set(labels[0])
    assert "cat" in cat["result"]["labels"][0]["label"].lower()


def test_a_bad_image_fails_alone_with_the_decoders_reason(client: httpx.Client) -> None:
    good, bad = tag(client, [photo_bytes("coffee.png"), corrupt_bytes()])
    assert good["status"] == "succeeded" and good["result"]["tags"][0]["tag"] == "food and drink", good
    assert bad["status"] == "failed" and "image" in bad["error"].lower(), bad


def test_the_pipeline_is_listed_as_a_chain_of_two_models(client: httpx.Client) -> None:
    info = client.get("/v1/pipelines/image-tag").json()
    assert info["input"]["kind"] == "image"
    stages = {s["name"]: s for s in info["stages"]}
    assert list(stages) == ["decode", "classify", "labels", "label_text", "embed", "tags"]
    assert [s["model"] for s in info["stages"] if s["kind"] == "model"] == ["efficientnet_lite0", "minilm_l6"]
    assert stages["tags"]["needs"] == ["embed", "labels"] and stages["label_text"]["needs"] == ["labels"]
