"""End to end: the protocol front doors on a running stack, through the real clients: OpenAI's
`openai` package on `POST /v1/embeddings`, Triton's `tritonclient[http]` on the /v2 routes. The
stack runs image-classify and text-embed only (a pipelines file cut from the shipped one), with
an API key set."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
import yaml

from tests.e2e.conftest import REPO, Stack, start_stack, stop_stack
from tests.support.photos import corrupt_bytes, photo_bytes

pytestmark = pytest.mark.e2e

KEY = "protocol-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ATOL = 1e-6  # on unit vectors of 384 float32s
TEXTS = ["a photo of a cat", "a picture of a kitten", "quarterly tax filing deadline", "naïve café 🙂 日本語"]


def two_pipelines(path: Path) -> Path:
    config = yaml.safe_load((REPO / "shared" / "pipelines.yaml").read_text())
    config["pipelines"] = {
        k: v for k, v in config["pipelines"].items() if k in ("image-classify", "text-embed")
    }
    config["models"] = {k: v for k, v in config["models"].items() if k in ("efficientnet_lite0", "minilm_l6")}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("protocols")
    extra = {"DLPIPE_PIPELINES_FILE": str(two_pipelines(tmp / "pipelines.yaml")), "DLPIPE_API_KEYS": KEY}
    running = start_stack(tmp, extra)
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tc(stack: Stack) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(stack.base_url.removeprefix("http://"), network_timeout=60)
    try:
        yield client
    finally:
        client.close()


def text_embed_vectors(http: httpx.Client, texts: list[str]) -> list[list[float]]:
    """The same texts through the text-embed pipeline's own submit (Prefer: wait)."""
    answer = http.post(
        "/v1/pipelines/text-embed/jobs",
        json={"inputs": [{"text": t} for t in texts]},
        headers={"Prefer": "wait=60"},
    )
    assert answer.status_code == 200, answer.text
    return [o["result"]["embedding"] for o in answer.json()["outputs"]]


# -- OpenAI embeddings ------------------------------------------------------------------------


def test_openai_vectors_equal_the_text_embed_pipelines(oai: openai.OpenAI, http: httpx.Client) -> None:
    expected = text_embed_vectors(http, TEXTS)
    as_floats = oai.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float")
    assert [d.index for d in as_floats.data] == list(range(len(TEXTS)))
    # Equal to float32 rounding: a batch pads its texts to its longest, which moves the last bits
    # (two submits of the same texts differ as much, when other texts share their batch).
    np.testing.assert_allclose([d.embedding for d in as_floats.data], expected, rtol=0, atol=ATOL)
    # The client's default: base64 float32, decoded by the client itself.
    by_default = oai.embeddings.create(model="text-embed", input=TEXTS)
    got = np.asarray([d.embedding for d in by_default.data], dtype=np.float32)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float32), rtol=0, atol=ATOL)
    assert as_floats.model == "all-MiniLM-L6-v2" and by_default.model == "text-embed"
    assert as_floats.object == "list" and as_floats.data[0].object == "embedding"


def test_openai_usage_counts_the_tokenizers_tokens(oai: openai.OpenAI) -> None:
    from workers.transforms.text import default_tokenizer_path, load_tokenizer

    tokenizer = load_tokenizer(str(default_tokenizer_path()), 256)
    one = oai.embeddings.create(model="all-MiniLM-L6-v2", input="a photo of a cat")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens == len(tokenizer.encode("a photo of a cat").ids) == 7
    many = oai.embeddings.create(model="all-MiniLM-L6-v2", input=["word " * 2000, "hi"])
    assert many.usage.prompt_tokens == many.usage.total_tokens == 256 + 3  # truncated as the model sees it


def test_openai_errors_come_in_openais_shape(oai: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="text-embedding-3-small", input="hi")
    assert (
        missing.value.body["code"] == "model_not_found"
        and "all-MiniLM-L6-v2" in missing.value.body["message"]
    )
    with pytest.raises(openai.BadRequestError) as blank:
        oai.embeddings.create(model="text-embed", input=["ok", "   "])
    assert (
        blank.value.body["param"] == "input[1].text" and blank.value.body["type"] == "invalid_request_error"
    )
    with pytest.raises(openai.BadRequestError) as tokens:
        oai.embeddings.create(model="text-embed", input=[[1, 2, 3]])
    assert "token arrays" in tokens.value.body["message"]
    with pytest.raises(openai.BadRequestError) as failed:  # the worker's refusal: no token left
        oai.embeddings.create(model="text-embed", input=["fine", "\x00\x01\x02"])
    assert failed.value.body["param"] == "input[1]"
    wrong_key = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong_key.embeddings.create(model="text-embed", input="hi")
    assert refused.value.body["code"] == "invalid_api_key"


# -- Open Inference Protocol v2 ---------------------------------------------------------------


def test_triton_health_metadata_and_readiness(tc: triton.InferenceServerClient, stack: Stack) -> None:
    assert tc.is_server_live() and tc.is_server_ready()
    keyed = triton_headers()
    assert tc.is_model_ready("image-classify", headers=keyed) and tc.is_model_ready(
        "text-embed", headers=keyed
    )
    assert not tc.is_model_ready("no-such-model", headers=keyed)
    assert not tc.is_model_ready("image-classify")  # without the key: 401
    meta = tc.get_model_metadata("image-classify", headers=keyed)
    assert meta["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["labels", "scores", "label_indices"]
    assert tc.get_server_metadata(headers=keyed)["extensions"] == ["binary_tensor_data"]
    # Metadata needs the key, health does not (as /readyz).
    assert httpx.get(f"{stack.base_url}/v2/models/image-classify").status_code == 401
    assert httpx.get(f"{stack.base_url}/v2/health/ready").status_code == 200


def triton_headers() -> dict[str, str]:
    return dict(AUTH)


def infer_images(
    tc: triton.InferenceServerClient, images: list[bytes], **output_kw: Any
) -> triton.InferResult:
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary data: the client's default
    outputs = (
        [triton.InferRequestedOutput(n, **output_kw) for n in ("labels", "scores")] if output_kw else None
    )
    return tc.infer("image-classify", [tensor], outputs=outputs, headers=triton_headers())


def test_triton_infer_classifies_a_real_photo(tc: triton.InferenceServerClient, http: httpx.Client) -> None:
    photos = [photo_bytes("chelsea.png", size=(1920, 1080)), photo_bytes("coffee.png")]
    result = infer_images(tc, photos)  # all outputs, binary (tritonclient's default)
    labels, scores, indices = (result.as_numpy(n) for n in ("labels", "scores", "label_indices"))
    assert labels.shape == (2, 5) and scores.shape == (2, 5) and scores.dtype == np.float32
    assert indices[0, 0] in CAT_CLASSES and b"cat" in labels[0, 0].lower(), labels[0]
    assert indices[1, 0] in (967, 968), labels[1]
    assert list(scores[0]) == sorted(scores[0], reverse=True)
    # The same as the pipeline's own answer (JSON outputs this time).
    as_json = infer_images(tc, photos, binary_data=False)
    assert as_json.as_numpy("labels").tolist() == [[x.decode() for x in row] for row in labels]  # JSON: str
    job = http.post(
        "/v1/pipelines/image-classify/jobs",
        json={"inputs": [{"image_base64": base64.b64encode(p).decode()} for p in photos]},
        headers={"Prefer": "wait=60"},
    ).json()
    expected = [[x["score"] for x in o["result"]["labels"]] for o in job["outputs"]]
    np.testing.assert_allclose(scores, np.asarray(expected, dtype=np.float32), rtol=1e-6)


def test_triton_infer_embeds_texts_as_fp32(tc: triton.InferenceServerClient, http: httpx.Client) -> None:
    tensor = triton.InferInput("texts", [len(TEXTS), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in TEXTS], dtype=np.object_), binary_data=False)
    result = tc.infer("text-embed", [tensor], headers=triton_headers())
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (len(TEXTS), 384) and embedding.dtype == np.float32
    expected = np.asarray(text_embed_vectors(http, TEXTS), dtype=np.float32)
    np.testing.assert_allclose(embedding, expected, rtol=0, atol=ATOL)


def test_triton_errors_come_in_the_protocols_shape(
    tc: triton.InferenceServerClient, http: httpx.Client
) -> None:
    bad = triton.InferInput("images", [2], "BYTES")
    bad.set_data_from_numpy(np.array([photo_bytes("coffee.png"), corrupt_bytes()], dtype=np.object_))
    with pytest.raises(triton.InferenceServerException) as failed:
        tc.infer("image-classify", [bad], headers=triton_headers())
    assert failed.value.status() == "400" and "inputs[0].data[1]" in failed.value.message()
    wrong = triton.InferInput("pixels", [1], "BYTES")
    wrong.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
    with pytest.raises(triton.InferenceServerException) as misnamed:
        tc.infer("image-classify", [wrong], headers=triton_headers())
    assert "'images'" in misnamed.value.message()
    answer = http.post("/v2/models/nope/infer", json={"inputs": []})
    assert answer.status_code == 404 and set(answer.json()) == {"error"}
    answer = http.post(
        "/v2/models/text-embed/infer",
        json={"inputs": [{"name": "texts", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
    )
    assert answer.status_code == 400 and "2 elements" in answer.json()["error"], answer.text
