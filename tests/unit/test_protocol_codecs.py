"""The protocol codecs, pure: OIP v2 tensors (JSON and binary), pipelines' results as tensors,
OpenAI's request and answer, the error re-shaping and the token counts."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.api.protocols import oip_models, oip_tensors, openai, tokens
from services.api.protocols.errors import oip_error, openai_error, reshape
from shared.errors import InvalidRequest, NotFound
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings

CONFIG = load_pipelines(Settings().pipelines_file)


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), str(len(head))


def test_bytes_elements_round_trip_and_a_cut_one_is_refused() -> None:
    values = [b"", b"abc", bytes(range(256))]
    raw = oip_tensors.join_bytes(values)
    assert raw[:4] == struct.pack("<I", 0) and oip_tensors.split_bytes(raw, "t") == values
    with pytest.raises(InvalidRequest, match="runs past"):
        oip_tensors.split_bytes(raw[:-1], "t")
    with pytest.raises(InvalidRequest, match="4-byte length"):
        oip_tensors.split_bytes(raw + b"\x01", "t")


def test_a_binary_request_is_split_by_its_sizes() -> None:
    images = oip_tensors.join_bytes([b"one", b"two"])
    floats = np.arange(4, dtype="<f4").tobytes()
    header = {
        "id": "r1",
        "inputs": [
            {
                "name": "images",
                "shape": [2, 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(images)},
            },
            {
                "name": "x",
                "shape": [2, 2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(floats)},
            },
        ],
        "outputs": [{"name": "labels", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True},
    }
    body, length = binary_body(header, images, floats)
    request = oip_tensors.parse_infer_request(body, length, 1 << 20)
    assert request.id == "r1" and request.inputs[0].values == [b"one", b"two"] and request.inputs[0].binary
    assert request.inputs[1].values.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert request.binary("scores") and not request.binary("labels")
    with pytest.raises(InvalidRequest, match="no input's binary_data_size claims"):
        oip_tensors.parse_infer_request(body + b"x", length, 1 << 20)
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length"):
        oip_tensors.parse_infer_request(body, str(len(body) + 1), 1 << 20)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "t", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}, "3 elements, the data 2"),
        ({"name": "t", "shape": [1], "datatype": "BYTES", "data": [1]}, "must be strings"),
        ({"name": "t", "shape": [1], "datatype": "FP99", "data": [1]}, "unknown datatype"),
        ({"name": "t", "shape": [1], "datatype": "BYTES"}, "neither `data`"),
        ({"name": "t", "shape": [-1], "datatype": "BYTES", "data": []}, "negative dimension"),
    ],
)
def test_bad_json_tensors_are_400s_that_say_why(tensor: dict, message: str) -> None:
    body = json.dumps({"inputs": [tensor]}).encode()
    with pytest.raises(InvalidRequest, match=message):
        oip_tensors.parse_infer_request(body, None, 1 << 20)


def test_nested_json_data_is_row_major() -> None:
    body = json.dumps(
        {"inputs": [{"name": "t", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]}
    )
    (tensor,) = oip_tensors.parse_infer_request(body.encode(), None, 1 << 20).inputs
    assert tensor.values.tolist() == [1, 2, 3, 4] and not tensor.binary


def test_results_become_tensors_padded_and_back_as_binary() -> None:
    pipeline = CONFIG.pipelines["image-classify"]
    results = [
        {
            "labels": [
                {"index": 285, "label": "Egyptian cat", "score": 0.5},
                {"index": 281, "label": "tabby", "score": 0.25},
            ]
        },
        {"labels": [{"index": 967, "label": "espresso", "score": 0.9}]},
    ]
    labels, scores, indices = oip_models.output_tensors(pipeline, results, None)
    assert labels.values == [b"Egyptian cat", b"tabby", b"espresso", b""] and labels.shape == [2, 2]
    assert np.isnan(scores.values[3]) and indices.values.tolist() == [285, 281, 967, -1]
    request = oip_tensors.InferRequest(None, [], None, binary_outputs=True)
    body, length = oip_tensors.encode_infer_response("image-classify", "1", request, [labels, scores])
    header = json.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [4 * 4 + 25, 16]
    assert oip_tensors.split_bytes(body[length : length + 41], "x") == labels.values
    as_json, none = oip_tensors.encode_infer_response(
        "m", "1", oip_tensors.InferRequest("a", [], None, False), [labels]
    )
    assert none is None and json.loads(as_json)["outputs"][0]["data"][0] == "Egyptian cat"


def test_a_pipeline_without_known_fields_gives_its_results_as_json_text() -> None:
    pipeline = CONFIG.pipelines["face-detect"]
    assert [s.name for s in oip_models.output_specs(pipeline)] == ["result"]
    (tensor,) = oip_models.output_tensors(pipeline, [{"faces": []}], None)
    assert tensor.shape == [1] and json.loads(tensor.values[0]) == {"faces": []}
    assert not oip_models.serves(CONFIG.pipelines["video-classify"])


def test_openai_model_names_resolve_to_text_pipelines() -> None:
    assert openai.resolve_model("text-embed", CONFIG).name == "text-embed"
    assert openai.resolve_model("all-MiniLM-L6-v2", CONFIG).name == "text-embed"
    assert openai.resolve_model("sentence-transformers/all-MiniLM-L6-v2", CONFIG).name == "text-embed"
    with pytest.raises(NotFound, match="known: all-MiniLM-L6-v2, text-embed"):
        openai.resolve_model("image-classify", CONFIG)  # an image pipeline embeds no text


def test_openai_requests_and_answers() -> None:
    assert openai.EmbeddingsRequest(model="m", input="hi").texts == ["hi"]
    for bad in ([[1, 2]], [], ["x"] * 2049):
        with pytest.raises(ValidationError):
            openai.EmbeddingsRequest(model="m", input=bad)
    vector = [0.1, -0.5, 1.0]
    answer = openai.embeddings_response([vector], "m", 7, "base64")
    decoded = np.frombuffer(base64.b64decode(answer["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == np.asarray(vector, dtype=np.float32).tolist()
    assert answer["usage"] == {"prompt_tokens": 7, "total_tokens": 7} and answer["object"] == "list"


def test_errors_keep_status_message_and_retry_after_in_each_shape() -> None:
    dlpipe = JSONResponse({"detail": "input[1].text: empty text", "field": "input[1].text"}, 422)
    shaped = reshape(dlpipe, openai_error)
    assert shaped.status_code == 400
    assert json.loads(shaped.body) == {
        "error": {
            "message": "input[1].text: empty text",
            "type": "invalid_request_error",
            "param": "input[1].text",
            "code": None,
        }
    }
    full = JSONResponse({"detail": "at capacity", "field": None}, 429, headers={"Retry-After": "3"})
    shaped = reshape(full, oip_error)
    assert shaped.status_code == 429 and shaped.headers["retry-after"] == "3"
    assert json.loads(shaped.body) == {"error": "at capacity"}


@pytest.mark.anyio
async def test_tokens_are_the_pipelines_tokenizers_else_an_estimate() -> None:
    count, exact = await tokens.count_tokens(CONFIG.pipelines["text-embed"], ["a photo of a cat", "hi"])
    assert exact and count == 7 + 3
    count, exact = await tokens.count_tokens(CONFIG.pipelines["image-classify"], ["12345678", "x"])
    assert not exact and count == 2 + 1
