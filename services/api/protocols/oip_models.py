"""Pipelines as Open Inference Protocol v2 models: what each takes and gives as tensors, its
metadata, and its results as output tensors. Pure; services/api/routers/oip.py is the HTTP side.

A model is an image or text pipeline (a video pipeline is not one: submit those as jobs). Its
one input is a BYTES tensor, `images` (encoded image files: raw bytes in binary data, base64
strings in JSON) or `texts` (UTF-8), of any shape: its elements, row-major, are the job's inputs.
Outputs come from the fields of the pipeline's results (its `output` in the pipelines file):

- `labels` ({index, label, score} best first) -> `labels` BYTES [n, k], `scores` FP32 [n, k],
  `label_indices` INT64 [n, k]
- `tags` ({tag, score}) -> `tags` BYTES [n, k], `tag_scores` FP32 [n, k]
- `embedding` (numbers) -> `embedding` FP32 [n, d]
- a pipeline with none of these -> `result` BYTES [n]: each result as JSON text.

Rows of unequal length (fewer labels in one result) are padded: "" , NaN, -1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel

from services.api.input_models import TextInput
from services.api.inputs import decode_base64
from services.api.protocols.oip_tensors import BYTES, DTYPES, InferRequest, Tensor
from shared.errors import InvalidRequest, shown
from shared.pipeline_spec import InputKind, PipelineSpec

VERSION = "1"
PLATFORM = "dlpipe"
INPUT_NAMES = {InputKind.image: "images", InputKind.text: "texts"}
_PAD = {BYTES: b"", "FP32": float("nan"), "INT64": -1}


@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: str
    rank: int  # 2: one row per item; 1: one element per item
    cells: Callable[[Any], list[Any]]  # one result -> its row


def _column(field: str, key: str) -> Callable[[Any], list[Any]]:
    return lambda result: [entry[key] for entry in result[field]]


FIELD_OUTPUTS: dict[str, list[OutputSpec]] = {
    "labels": [
        OutputSpec("labels", BYTES, 2, _column("labels", "label")),
        OutputSpec("scores", "FP32", 2, _column("labels", "score")),
        OutputSpec("label_indices", "INT64", 2, _column("labels", "index")),
    ],
    "tags": [
        OutputSpec("tags", BYTES, 2, _column("tags", "tag")),
        OutputSpec("tag_scores", "FP32", 2, _column("tags", "score")),
    ],
    "embedding": [OutputSpec("embedding", "FP32", 2, lambda result: result["embedding"])],
}
RESULT_JSON = OutputSpec("result", BYTES, 1, lambda result: [orjson.dumps(result)])


def serves(pipeline: PipelineSpec) -> bool:
    return pipeline.input in INPUT_NAMES


def input_name(pipeline: PipelineSpec) -> str:
    return INPUT_NAMES[pipeline.input]


def output_specs(pipeline: PipelineSpec) -> list[OutputSpec]:
    specs = [spec for field in pipeline.output for spec in FIELD_OUTPUTS.get(field, [])]
    return specs or [RESULT_JSON]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


def metadata(pipeline: PipelineSpec) -> ModelMetadata:
    return ModelMetadata(
        name=pipeline.name,
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[TensorMetadata(name=input_name(pipeline), datatype=BYTES, shape=[-1])],
        outputs=[
            TensorMetadata(name=s.name, datatype=s.datatype, shape=[-1] * s.rank)
            for s in output_specs(pipeline)
        ],
    )


def job_inputs(
    pipeline: PipelineSpec, request: InferRequest, max_input_bytes: int
) -> list[bytes | BaseModel]:
    """The request's one input tensor as the job's inputs (services.api.inputs.parse_values):
    image files as bytes (from base64 in JSON), texts as JSON text inputs or UTF-8 bytes."""
    name = input_name(pipeline)
    if len(request.inputs) != 1 or request.inputs[0].name != name:
        given = ", ".join(shown(t.name) for t in request.inputs)
        raise InvalidRequest(
            f"inputs: model {pipeline.name!r} takes one input, {name!r} (BYTES); given: {given}",
            field="inputs",
        )
    tensor = request.inputs[0]
    if tensor.datatype != BYTES:
        raise InvalidRequest(
            f"inputs[0].datatype: {name!r} is a BYTES tensor, not {tensor.datatype}",
            field="inputs[0].datatype",
        )
    assert isinstance(tensor.values, list)
    if tensor.binary:
        return list(tensor.values)
    if pipeline.input is InputKind.image:  # JSON carries no raw bytes: base64 text
        return [
            decode_base64(v.decode("utf-8", "replace"), f"inputs[0].data[{i}]", max_input_bytes)
            for i, v in enumerate(tensor.values)
        ]
    return [TextInput(text=v.decode("utf-8", "surrogatepass")) for v in tensor.values]


def check_outputs(pipeline: PipelineSpec, request: InferRequest) -> list[str] | None:
    """The outputs asked for, in order (None: all), each one the model has."""
    if request.outputs is None:
        return None
    names = [s.name for s in output_specs(pipeline)]
    for index, wanted in enumerate(request.outputs):
        if wanted.name not in names:
            raise InvalidRequest(
                f"outputs[{index}].name: model {pipeline.name!r} has no output {shown(wanted.name)} "
                f"(it has {', '.join(names)})",
                field=f"outputs[{index}].name",
            )
    return [w.name for w in request.outputs]


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")


def output_tensors(pipeline: PipelineSpec, results: list[Any], wanted: list[str] | None) -> list[Tensor]:
    """The results of n items as the pipeline's output tensors (`wanted`: these, in this order)."""
    specs = {s.name: s for s in output_specs(pipeline)}
    tensors = []
    for name in wanted if wanted is not None else list(specs):
        spec = specs[name]
        rows = [spec.cells(result) for result in results]
        if spec.rank == 1:
            cells = [row[0] for row in rows]
            shape = [len(rows)]
        else:
            width = max((len(row) for row in rows), default=0)
            cells = [c for row in rows for c in [*row, *[_PAD[spec.datatype]] * (width - len(row))]]
            shape = [len(rows), width]
        if spec.datatype == BYTES:
            values: list[bytes] | np.ndarray = [_as_bytes(c) for c in cells]
        else:
            values = np.asarray(cells, dtype=DTYPES[spec.datatype])
        tensors.append(Tensor(spec.name, spec.datatype, shape, values))
    return tensors
