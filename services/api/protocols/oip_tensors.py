"""Open Inference Protocol v2 tensors (KServe / Triton REST), as a codec: an inference
request's body into its tensors, and output tensors into a response body. Pure: bytes in,
bytes out; services/api/routers/oip.py is the HTTP side.

Both of the protocol's encodings are taken and given:
- JSON: a tensor's `data` is a (flat or nested) list, row-major; BYTES elements are strings.
- The binary tensor data extension (Triton's, what tritonclient sends and asks for by
  default): the body is the JSON header (its length in the `Inference-Header-Content-Length`
  header), then each tensor whose `parameters.binary_data_size` is set, in order, as raw
  little-endian values; a BYTES element is a 4-byte little-endian length, then its bytes. An
  output comes back binary when the request asks (`outputs[i].parameters.binary_data`, or
  `parameters.binary_data_output` for all of them), else as JSON.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.api.errors import describe_validation_errors
from shared.errors import InvalidRequest, shown

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"

# Fixed-size datatypes and their little-endian numpy dtypes; BYTES is variable-sized.
DTYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
BYTES = "BYTES"


EXAMPLES: dict[str, Any] = {
    "texts": {
        "summary": "Two texts (a text pipeline)",
        "value": {
            "inputs": [{"name": "texts", "shape": [2], "datatype": "BYTES", "data": ["a cat", "a kitten"]}]
        },
    },
}


class TensorIn(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(examples=["BYTES"])
    parameters: dict[str, Any] | None = None
    data: Any = Field(default=None, description="Row-major values (absent with `binary_data_size`).")


class OutputIn(BaseModel):
    """An output the request asks for (none listed: all of them)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferRequestBody(BaseModel):
    """An inference request (its JSON part, with the binary extension)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[TensorIn] = Field(min_length=1)
    outputs: list[OutputIn] | None = None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON Schema with its `$defs` put in place (for an OpenAPI requestBody, where
    `#/$defs/...` would point at the document's root)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


class TensorOut(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponseBody(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[TensorOut]


@dataclass(frozen=True)
class Tensor:
    """A decoded tensor: BYTES as a flat list of bytes, others as a flat numpy array."""

    name: str
    datatype: str
    shape: list[int]
    values: list[bytes] | np.ndarray
    binary: bool = False  # came as binary data (BYTES from JSON strings: their UTF-8)


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[OutputIn] | None
    binary_outputs: bool  # `parameters.binary_data_output`

    def binary(self, name: str) -> bool:
        """Whether output `name` goes back as binary data."""
        for wanted in self.outputs or []:
            if wanted.name == name and wanted.parameters and "binary_data" in wanted.parameters:
                return bool(wanted.parameters["binary_data"])
        return self.binary_outputs


def _bad(message: str, field: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, field=field)


def _count(shape: list[int], where: str) -> int:
    if any(d < 0 for d in shape):
        raise _bad(f"{where}.shape: {shape} has a negative dimension", f"{where}.shape")
    return math.prod(shape)


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    return [y for x in data for y in _flat(x)]


def split_bytes(raw: bytes | memoryview, where: str) -> list[bytes]:
    """A BYTES tensor's binary data: elements of a 4-byte little-endian length and the bytes."""
    view = memoryview(raw)
    out: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise _bad(f"{where}: binary BYTES data ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise _bad(f"{where}: a BYTES element of {size} bytes runs past the tensor's data")
        out.append(bytes(view[offset : offset + size]))
        offset += size
    return out


def join_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _tensor(spec: TensorIn, where: str, tail: memoryview, offset: int) -> tuple[Tensor, int]:
    count = _count(spec.shape, where)
    size = (spec.parameters or {}).get("binary_data_size")
    if spec.datatype != BYTES and spec.datatype not in DTYPES:
        raise _bad(f"{where}.datatype: unknown datatype {shown(spec.datatype)}", f"{where}.datatype")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise _bad(f"{where}: binary_data_size {shown(size)} runs past the body's binary data", where)
        raw = tail[offset : offset + size]
        offset += size
        if spec.datatype == BYTES:
            values: list[bytes] | np.ndarray = split_bytes(raw, where)
        else:
            dtype = np.dtype(DTYPES[spec.datatype])
            if size % dtype.itemsize:
                raise _bad(f"{where}: {size} bytes is not a whole number of {spec.datatype} values", where)
            values = np.frombuffer(raw, dtype=dtype)
    elif spec.data is None:
        raise _bad(f"{where}: neither `data` nor `parameters.binary_data_size`", f"{where}.data")
    elif spec.datatype == BYTES:
        flat = _flat(spec.data)
        if not all(isinstance(v, str) for v in flat):
            raise _bad(f"{where}.data: BYTES elements in JSON must be strings", f"{where}.data")
        values = [v.encode("utf-8", "surrogatepass") for v in flat]
    else:
        try:
            values = np.asarray(_flat(spec.data), dtype=DTYPES[spec.datatype])
        except (TypeError, ValueError, OverflowError):
            raise _bad(f"{where}.data: not {spec.datatype} values", f"{where}.data") from None
    if len(values) != count:
        raise _bad(f"{where}: shape {spec.shape} holds {count} elements, the data {len(values)}", where)
    return Tensor(spec.name, spec.datatype, list(spec.shape), values, binary=size is not None), offset


def parse_infer_request(body: bytes, header_length: str | None, max_header_bytes: int) -> InferRequest:
    """The body of `POST /v2/models/{m}/infer` (`header_length`: the request's
    Inference-Header-Content-Length, None when the body is all JSON)."""
    if header_length is None:
        split = len(body)
    elif not header_length.strip().isdigit() or int(header_length) > len(body):
        raise _bad(f"{HEADER_LENGTH}: {shown(header_length)} is not a length within the body", HEADER_LENGTH)
    else:
        split = int(header_length)
    if split > max_header_bytes:
        raise _bad(f"the JSON is over {max_header_bytes} bytes (DLPIPE_MAX_JSON_BODY_BYTES)", "body")
    try:
        data = orjson.loads(body[:split])
    except orjson.JSONDecodeError as exc:
        raise _bad(f"body: not valid JSON ({exc})", "body") from None
    try:
        spec = InferRequestBody.model_validate(data)
    except ValidationError as exc:
        message, first = describe_validation_errors(exc.errors())
        raise InvalidRequest(message, field=first) from None
    tail = memoryview(body)[split:]
    offset = 0
    tensors = []
    for index, tensor in enumerate(spec.inputs):
        decoded, offset = _tensor(tensor, f"inputs[{index}]", tail, offset)
        tensors.append(decoded)
    if offset != len(tail):
        unclaimed = len(tail) - offset
        raise _bad(f"body: {unclaimed} bytes of binary data no input's binary_data_size claims", "body")
    binary_all = bool((spec.parameters or {}).get("binary_data_output", False))
    return InferRequest(spec.id, tensors, spec.outputs, binary_all)


def encode_infer_response(
    model: str, version: str, request: InferRequest, outputs: list[Tensor]
) -> tuple[bytes, int | None]:
    """The response body, and its JSON part's length when binary data follows it (for the
    Inference-Header-Content-Length header; None: the body is all JSON)."""
    shown_outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if request.binary(tensor.name):
            if tensor.datatype == BYTES:
                assert isinstance(tensor.values, list)
                blob = join_bytes(tensor.values)
            else:
                blob = np.asarray(tensor.values, dtype=DTYPES[tensor.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif tensor.datatype == BYTES:
            assert isinstance(tensor.values, list)
            entry["data"] = [v.decode("utf-8", "replace") for v in tensor.values]
        else:
            entry["data"] = np.asarray(tensor.values).tolist()
        shown_outputs.append(entry)
    answer: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": shown_outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
