"""OpenAI's embeddings API (`POST /v1/embeddings`), as a codec: the request's model, which
pipeline serves a `model` name, and the answer's shape. The route is
services/api/routers/openai_embeddings.py.

`model` is a pipeline's name (`text-embed`) or the public name of the model it runs
(`all-MiniLM-L6-v2`: a model entry's `public_name` in the pipelines file; an org prefix,
`sentence-transformers/all-MiniLM-L6-v2`, is accepted too). Only text pipelines serve it.
`encoding_format: base64` gives each vector as the base64 of its float32 values, little-endian,
which is how the openai client asks by default (it decodes them itself).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import InvalidRequest, NotFound, shown
from shared.pipeline_spec import InputKind, PipelinesConfig, PipelineSpec

MAX_INPUTS = 2048  # as OpenAI: at most 2048 texts a request (DLPIPE_MAX_INPUTS_PER_JOB may cut it lower)


EXAMPLES: dict[str, Any] = {
    "one": {"summary": "One text", "value": {"model": "all-MiniLM-L6-v2", "input": "a photo of a cat"}},
    "several": {
        "summary": "Several texts, as base64 float32",
        "value": {
            "model": "text-embed",
            "input": ["a photo of a cat", "a kitten"],
            "encoding_format": "base64",
        },
    },
}


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request (https://platform.openai.com/docs/api-reference/embeddings)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="A text pipeline's name, or the public name of the model it runs.",
        examples=["all-MiniLM-L6-v2", "text-embed"],
    )
    input: str | list[str] = Field(
        description="One text, or a list of up to 2048 texts (token arrays are not accepted).",
        examples=["a photo of a cat", ["a photo of a cat", "a picture of a kitten"]],
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float",
        description="`float`: lists of numbers; `base64`: each vector's float32 values (little-endian), base64.",
    )
    dimensions: None = Field(
        default=None, description="Not supported: the model's vectors have one size (leave it out, or null)."
    )
    user: str | None = Field(default=None, description="Accepted and ignored.")

    @field_validator("input", mode="before")
    @classmethod
    def _no_tokens(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise ValueError("token arrays are not accepted: send the texts (a string or a list of strings)")
        if isinstance(value, list) and not value:
            raise ValueError("must hold at least one text")
        if isinstance(value, list) and len(value) > MAX_INPUTS:
            raise ValueError(f"{len(value)} texts, at most {MAX_INPUTS}")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def served_names(config: PipelinesConfig) -> dict[str, PipelineSpec]:
    """Every `model` name the route serves -> its pipeline: text pipelines by name, then each
    public model name (the first text pipeline, by name, that runs that model)."""
    names: dict[str, PipelineSpec] = {}
    texts = [p for _, p in sorted(config.pipelines.items()) if p.input is InputKind.text]
    for pipeline in texts:
        names[pipeline.name] = pipeline
    for pipeline in texts:
        for stage in pipeline.stages:
            model = config.models.get(stage.model or "")
            if model is not None and model.public_name:
                names.setdefault(model.public_name, pipeline)
    return names


def resolve_model(name: str, config: PipelinesConfig) -> PipelineSpec:
    names = served_names(config)
    found = names.get(name) or names.get(name.rsplit("/", 1)[-1])
    if found is None:
        known = ", ".join(sorted(names)) or "none"
        raise NotFound(f"model: no embedding model {shown(name)} (known: {known})")
    return found


def vectors_of(results: list[Any], pipeline: str) -> list[list[float]]:
    """Each result's `embedding` (a text-embed result: {"embedding": [...], "dim": 384})."""
    vectors = []
    for index, result in enumerate(results):
        embedding = result.get("embedding") if isinstance(result, dict) else None
        if not isinstance(embedding, list):
            raise InvalidRequest(
                f"model: pipeline {pipeline!r} does not give embeddings (result {index} has no `embedding`)",
                field="model",
            )
        vectors.append(embedding)
    return vectors


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def embeddings_response(
    vectors: list[list[float]], model: str, prompt_tokens: int, encoding_format: str
) -> dict[str, Any]:
    """OpenAI's answer: {"object": "list", "data": [...], "model", "usage"}."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="The vector, or its base64 (float32, little-endian).")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the model saw (docs/protocols.md: how they are counted).")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    """OpenAI's embeddings answer."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error shape, on /v1/embeddings only."""

    error: OpenAIErrorDetail
