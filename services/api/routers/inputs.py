"""A job's kept inputs: `GET /v1/jobs/{id}/inputs/{index}`, the original bytes, for previews."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Response

from services.api.deps import OwnedJobId, RedisDep
from services.api.schemas import ErrorBody
from shared import codecs, keys
from shared.errors import NotFound, shown

router = APIRouter(prefix="/v1", tags=["jobs"])

SNIFFED = ("image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4", "text/plain; charset=utf-8")
OCTETS = "application/octet-stream"


def sniff(data: bytes) -> str:
    """The content type of an input by its first bytes (never by what a client said it was)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return OCTETS
        return "text/plain; charset=utf-8"
    return OCTETS


def _inputs_of(total: str | None, groups: str | None) -> int:
    """How many inputs (outputs) a job has: its items less those folded into groups (videos)."""
    folded = sum(int(g["count"]) - 1 for g in json.loads(groups)) if groups else 0
    return int(total or 0) - folded


@router.get(
    "/jobs/{job_id}/inputs/{index}",
    summary="Get a job's input",
    description=(
        "The original bytes of input `index` of a job that kept its inputs (`keep_inputs`, or "
        "`DLPIPE_KEEP_INPUTS`), while the job is kept: an uploaded file or a base64 image (a text "
        "input as UTF-8). The content type is sniffed from the bytes ("
        + ", ".join(SNIFFED)
        + f", else {OCTETS}), with `X-Content-Type-Options: nosniff`. The key may come as "
        "`?access_token=` (for `<img src>`). 404, saying why, for anything else: no such job, "
        "inputs not kept, index out of range, an input that names data elsewhere (a URL, a path)."
    ),
    response_class=Response,
    responses={
        200: {"description": "The input's bytes.", "content": {t: {} for t in (*SNIFFED, OCTETS)}},
        404: {
            "model": ErrorBody,
            "description": "No such job, or no such kept input (the reason says which).",
        },
        503: {"model": ErrorBody, "description": "Redis is unavailable."},
    },
)
async def job_input(
    client: RedisDep,
    job_id: OwnedJobId,
    index: Annotated[int, Path(ge=0, le=10_000_000, description="The input's index (as in `outputs`).")],
) -> Response:
    async with client.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.job(job_id), ["status", "kept", "total", "groups"])
        pipe.hmget(keys.job_inputs(job_id), [str(index), f"blob:{index}"])
        pipe.exists(keys.job_inputs(job_id))
        (status, kept, total, groups), (data, blob), exists = await pipe.execute()
    if status is None:
        raise NotFound(f"no job {shown(job_id)}")
    if kept is None:
        raise NotFound(f"job {shown(job_id)} did not keep its inputs (submit it with keep_inputs)")
    count = _inputs_of(codecs.text_or_none(total), codecs.text_or_none(groups))
    if index >= count:
        raise NotFound(f"job {shown(job_id)} has {count} inputs: no input {index}")
    if data is None and blob is not None:
        data = await client.get(keys.job_blob(job_id, int(codecs.text_or_none(blob) or 0)))
        if data is None:
            raise NotFound(f"input {index} of job {shown(job_id)} is no longer kept (expired)")
    if data is None:
        if not exists:
            raise NotFound(f"the inputs of job {shown(job_id)} are no longer kept (expired)")
        raise NotFound(
            f"input {index} of job {shown(job_id)} is not kept: it names data elsewhere (a URL or a path)"
        )
    return Response(
        data,
        media_type=sniff(data),
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
            "Cache-Control": "private, max-age=3600",
        },
    )
