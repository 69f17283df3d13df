"""End to end: texts through HTTP into the running stack's `text-embed` pipeline (MiniLM-L6)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

URL = "/v1/pipelines/text-embed/jobs"


def wait_final(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(final, timeout_s=timeout_s, what=f"job {job_id} to finish")


def embed(client: httpx.Client, texts: list[str]) -> list[dict[str, Any]]:
    response = client.post(URL, json={"inputs": [{"text": t} for t in texts]})
    assert response.status_code == 202, response.text
    done = wait_final(client, response.json()["id"])
    assert [o["index"] for o in done["outputs"]] == list(range(len(texts)))
    return done["outputs"]


def vector(output: dict[str, Any]) -> np.ndarray:
    assert output["status"] == "succeeded", output
    result = output["result"]
    assert result["dim"] == 384 and len(result["embedding"]) == 384
    return np.asarray(result["embedding"], dtype=np.float64)


def test_similar_texts_get_closer_embeddings(client: httpx.Client) -> None:
    outputs = embed(client, ["a photo of a cat", "a picture of a kitten", "quarterly tax filing deadline"])
    cat, kitten, tax = (vector(o) for o in outputs)
    for v in (cat, kitten, tax):
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    assert float(cat @ kitten) > float(cat @ tax) + 0.2, (float(cat @ kitten), float(cat @ tax))


def test_a_long_text_is_truncated_and_a_bad_item_fails_alone(client: httpx.Client) -> None:
    long_text = "word " * 2000  # thousands of tokens: truncated to 256, under the 10,000-character cap
    outputs = embed(client, [long_text, "\x00\x01\x02", "naïve café 🙂 日本語"])
    assert [o["status"] for o in outputs] == ["succeeded", "failed", "succeeded"]
    for output in (outputs[0], outputs[2]):
        vector(output)
    assert "no content" in outputs[1]["error"]


def test_a_text_file_upload_is_embedded_like_its_json_text(client: httpx.Client) -> None:
    text = "Ünïcode text from a file, with a second line.\nSecond line."
    files = [("files", ("note.txt", text.encode("utf-8"), "text/plain"))]
    response = client.post(URL, files=files)
    assert response.status_code == 202, response.text
    (from_file,) = wait_final(client, response.json()["id"])["outputs"]
    (from_json,) = embed(client, [text])
    np.testing.assert_allclose(vector(from_file), vector(from_json), atol=1e-5)


def test_bad_text_requests_are_422_naming_the_field(client: httpx.Client) -> None:
    response = client.post(URL, json={"inputs": [{"text": "ok"}, {"text": "   "}]})
    assert response.status_code == 422 and response.json()["field"] == "inputs[1].text", response.text
    response = client.post(URL, files=[("files", ("bad.txt", b"caf\xe9", "text/plain"))])
    assert response.status_code == 422 and response.json()["field"] == "files[0]", response.text
    assert "UTF-8" in response.json()["detail"]


def test_the_pipeline_is_listed_with_its_text_input(client: httpx.Client) -> None:
    info = client.get("/v1/pipelines/text-embed").json()
    assert info["input"]["kind"] == "text" and info["input"]["json_fields"] == ["text"]
    assert [s["name"] for s in info["stages"]] == ["tokenize", "embed", "result"]
    assert info["stages"][1]["batching"] == {"max_batch_size": 32, "max_batch_delay_ms": 5}
