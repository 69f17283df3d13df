"""The Open Inference Protocol v2 (KServe / Triton REST) on dlpipe's image and text pipelines:
health, server and model metadata, readiness, and `POST /v2/models/{name}/infer`, synchronous and
a normal job (services/api/sync_jobs.py). The tensors' codec is services/api/protocols/oip_*.py.
Errors in the protocol's shape, `{"error": "<message>"}`. The health routes are open, as
/healthz and /readyz are; the others need the API key when keys are set."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from services.api.auth import require_api_key
from services.api.deps import ConfigDep, PipelineDep, RedisDep, SettingsDep, WaitersDep
from services.api.errors import UnsupportedMediaType
from services.api.inputs import Limits, parse_values
from services.api.protocols import oip_models, oip_tensors
from services.api.protocols.errors import oip_error, protocol_route
from services.api.routers.health import live_workers, missing
from services.api.sync_jobs import failed_items, run_to_end
from shared.errors import InvalidRequest, NotFound
from shared.pipeline_spec import PipelineSpec

router = APIRouter(prefix="/v2", tags=["inference protocol v2"], route_class=protocol_route(oip_error))

INLINE_PARSE_BYTES = 64 * 1024  # a smaller body is decoded on the event loop (a thread hop costs more)


class OipError(BaseModel):
    error: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": OipError, "description": "No API key or a wrong one (keys are set)."},
    404: {"model": OipError, "description": "No image or text pipeline of that name."},
}
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"model": OipError, "description": "The request is not valid, or an input could not be run."},
    415: {"model": OipError, "description": "A compressed request (`Content-Encoding`)."},
    429: {"model": OipError, "description": "The pipeline's backlog is full: retry after `Retry-After` s."},
    503: {"model": OipError, "description": "Redis is unavailable or full: retry after `Retry-After` s."},
    504: {"model": OipError, "description": "The job did not end within DLPIPE_SYNC_TIMEOUT_S."},
}
KEYED = [Depends(require_api_key)]


async def get_model(pipeline: PipelineDep) -> PipelineSpec:
    if not oip_models.serves(pipeline):
        raise NotFound(
            f"model {pipeline.name!r} is a {pipeline.input.value} pipeline: only image and text pipelines "
            "are served over v2 (submit it as a job)"
        )
    return pipeline


ModelDep = Annotated[PipelineSpec, Depends(get_model)]


async def _ready(client: Any, settings: Any, streams: list[str]) -> bool:
    try:
        return not missing(await live_workers(client, settings.worker_ttl_ms), streams)
    except (RedisError, OSError):
        return False


@router.get(
    "",
    response_model=oip_models.ServerMetadata,
    summary="Server metadata",
    dependencies=KEYED,
    responses=_ERRORS,
)
async def server_metadata(request: Request) -> oip_models.ServerMetadata:
    extensions = ["binary_tensor_data"]
    return oip_models.ServerMetadata(name="dlpipe", version=request.app.version, extensions=extensions)


@router.get("/health/live", response_model=Live, summary="Server live", description="200 while it answers.")
async def server_live() -> Live:
    return Live(live=True)


@router.get(
    "/health/ready",
    response_model=Ready,
    summary="Server ready",
    description="200 when every pipeline's streams are served by live workers (as /readyz), else 503.",
    responses={503: {"model": Ready, "description": "Not ready."}},
)
async def server_ready(client: RedisDep, config: ConfigDep, settings: SettingsDep) -> JSONResponse:
    ready = await _ready(client, settings, config.work_streams())
    return JSONResponse(Ready(ready=ready).model_dump(), status_code=200 if ready else 503)


@router.get(
    "/models/{name}",
    response_model=oip_models.ModelMetadata,
    summary="Model metadata",
    dependencies=KEYED,
    description="The pipeline's input and output tensors (docs/protocols.md: how results become tensors).",
    responses=_ERRORS,
)
async def model_metadata(model: ModelDep) -> oip_models.ModelMetadata:
    return oip_models.metadata(model)


@router.get(
    "/models/{name}/ready",
    response_model=ModelReady,
    summary="Model ready",
    dependencies=KEYED,
    description="200 when every stream of the pipeline is served by a live worker, else 503.",
    responses={**_ERRORS, 503: {"model": ModelReady, "description": "Not ready."}},
)
async def model_ready(model: ModelDep, client: RedisDep, settings: SettingsDep) -> JSONResponse:
    ready = await _ready(client, settings, [model.stream_name(s) for s in model.stages])
    body = ModelReady(name=model.name, ready=ready).model_dump()
    return JSONResponse(body, status_code=200 if ready else 503)


def _decode(body: bytes, header_length: str | None, model: PipelineSpec, settings: Any) -> tuple[Any, ...]:
    request = oip_tensors.parse_infer_request(body, header_length, settings.max_json_body_bytes)
    wanted = oip_models.check_outputs(model, request)
    limits = Limits(max_inputs=settings.max_inputs_per_job, max_input_bytes=settings.max_input_bytes)
    values = oip_models.job_inputs(model, request, settings.max_input_bytes)
    return request, wanted, parse_values(values, model, limits, "inputs[0].data")


@router.post(
    "/models/{name}/infer",
    response_model=oip_tensors.InferResponseBody,
    summary="Infer",
    dependencies=KEYED,
    description=(
        "Run the pipeline on the elements of one BYTES input tensor (`images`: encoded image files; "
        "`texts`: UTF-8), as one job batched with everyone else's, and answer with its outputs as "
        "tensors when it ends. JSON, or Triton's binary tensor data extension (the JSON's length in "
        "`Inference-Header-Content-Length`, then the tensors' bytes; any content type), both ways."
    ),
    responses=_INFER_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": oip_tensors.inline_schema(oip_tensors.InferRequestBody),
                    "examples": oip_tensors.EXAMPLES,
                },
            },
        }
    },
)
async def infer(
    request: Request, model: ModelDep, settings: SettingsDep, client: RedisDep, waiters: WaitersDep
) -> Response:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not accepted: send it uncompressed")
    body = await request.body()
    header_length = request.headers.get(oip_tensors.HEADER_LENGTH)
    if len(body) <= INLINE_PARSE_BYTES:
        decoded, wanted, parsed = _decode(body, header_length, model, settings)
    else:
        decoded, wanted, parsed = await run_in_threadpool(_decode, body, header_length, model, settings)
    final = await run_to_end(request, client, settings, waiters, model, parsed)
    failed = failed_items(final)
    if failed:
        where = f"inputs[0].data[{failed[0].index}]"
        raise InvalidRequest(f"{where}: {failed[0].error or failed[0].status.value}", field=where)
    tensors = oip_models.output_tensors(model, [o.result for o in final.outputs], wanted)
    answer, json_size = oip_tensors.encode_infer_response(model.name, oip_models.VERSION, decoded, tensors)
    if json_size is None:
        return Response(answer, media_type="application/json")
    headers = {oip_tensors.HEADER_LENGTH: str(json_size)}
    return Response(answer, media_type=oip_tensors.BINARY_MEDIA_TYPE, headers=headers)
