"""OpenAI-compatible embeddings: `POST /v1/embeddings` (services/api/protocols/openai.py is the
codec). Synchronous, and a normal job: written as submit writes it, batched with every other
job's texts, answered when it ends (services/api/sync_jobs.py). Errors in OpenAI's shape."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Request, Response

from services.api.deps import ConfigDep, RedisDep, SettingsDep, WaitersDep
from services.api.input_models import TextInput
from services.api.inputs import Limits, parse_values
from services.api.protocols import openai, tokens
from services.api.protocols.errors import openai_error, protocol_route
from services.api.sync_jobs import failed_items, run_to_end
from shared.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["openai"], route_class=protocol_route(openai_error))

_ERRORS = {
    status: {"model": openai.OpenAIError, "description": description}
    for status, description in {
        400: "The request is not valid (`param` names what), or a text could not be embedded.",
        401: "No API key or a wrong one (keys are set).",
        404: "No text pipeline or model of that name (`model_not_found`).",
        429: "The pipeline's backlog is full: retry after `Retry-After` s (`rate_limit_exceeded`).",
        503: "Redis is unavailable or full: retry after `Retry-After` s.",
        504: "The job did not end within DLPIPE_SYNC_TIMEOUT_S (`timeout`).",
    }.items()
}


@router.post(
    "/embeddings",
    response_model=openai.EmbeddingsResponse,
    summary="Create embeddings (OpenAI-compatible)",
    description=(
        "OpenAI's embeddings API on a text pipeline: `model` is the pipeline's name or its model's "
        "public name (`all-MiniLM-L6-v2`). The texts run as one job of the pipeline, batched with "
        "everyone else's, and the answer comes when it ends; `usage` counts the tokens the model saw "
        '(docs/protocols.md). Errors come in OpenAI\'s shape, `{"error": {message, type, param, code}}`.'
    ),
    responses=_ERRORS,
)
async def create_embeddings(
    body: Annotated[openai.EmbeddingsRequest, Body(openapi_examples=openai.EXAMPLES)],
    request: Request,
    config: ConfigDep,
    settings: SettingsDep,
    client: RedisDep,
    waiters: WaitersDep,
) -> Response:
    pipeline = openai.resolve_model(body.model, config)
    texts = body.texts
    limits = Limits(max_inputs=settings.max_inputs_per_job, max_input_bytes=settings.max_input_bytes)
    parsed = parse_values([TextInput(text=t) for t in texts], pipeline, limits, "input")
    final = await run_to_end(request, client, settings, waiters, pipeline, parsed)
    failed = failed_items(final)
    if failed:
        first = failed[0]
        where = f"input[{first.index}]"
        raise InvalidRequest(f"{where}: {first.error or first.status.value}", field=where)
    vectors = openai.vectors_of([o.result for o in final.outputs], pipeline.name)
    prompt_tokens, _exact = await tokens.count_tokens(pipeline, texts)
    answer = openai.embeddings_response(vectors, body.model, prompt_tokens, body.encoding_format)
    return Response(orjson.dumps(answer), media_type="application/json")
