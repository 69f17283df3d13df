"""The files a job's outputs give (shared/files.py): served as they were stored, never as a page."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from services.api.deps import OwnedJobId, RedisDep
from services.api.schemas import ErrorBody
from shared import files, keys
from shared.errors import NotFound, shown

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# A file is the job's data, not a page of this site: never sniffed into HTML, no script, no
# style, nothing fetched, no form, no plugin, even when opened on its own.
SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=300",
}


@router.get(
    "/jobs/{job_id}/outputs/{index}/files/{name}",
    summary="Get a file an output gives",
    description=(
        "A file a job's output gives (a `face-blur` JPEG), with its content type: its result's "
        "`files` list names each one with its `url`. `index` is the item's index as that url has "
        "it: the output's index for images (a video's frames are items of their own, each with "
        "its url). Files are kept as long as the job's outputs (`DLPIPE_JOB_TTL_S`). Served "
        "with `X-Content-Type-Options: nosniff` and `Content-Security-Policy: default-src 'none'; "
        "sandbox`; JPEG, PNG, GIF and WebP inline, others as attachments."
    ),
    response_class=Response,
    responses={
        200: {"content": {"*/*": {}}, "description": "The file's bytes, with its content type."},
        404: {"model": ErrorBody, "description": "No such job, output or file."},
        422: {"model": ErrorBody, "description": "The index is not an integer; `field` names it."},
        503: {"model": ErrorBody, "description": "Redis is unavailable."},
    },
)
async def get_file(
    client: RedisDep,
    job_id: OwnedJobId,
    index: Annotated[int, Path(description="The item's index, as the file's url gives it.")],
    name: Annotated[str, Path(description="The file's name, as the output's `files` list gives it.")],
) -> Response:
    try:
        files.check_name(name)
    except files.FileError:
        raise NotFound(f"no file {shown(name)}: not a file name an output can give") from None
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(keys.job(job_id), "total")
        pipe.hget(keys.job_files(job_id), files.field(index, name))
        total, stored = await pipe.execute()
    if total is None:
        raise NotFound(f"no job {shown(job_id)}")
    if not 0 <= index < int(total):
        raise NotFound(f"job {shown(job_id)} has no output {index} (its items: 0 to {int(total) - 1})")
    if stored is None:
        raise NotFound(f"output {index} of job {shown(job_id)} has no file {shown(name)}")
    try:
        content_type, data = files.decode(stored)
    except files.FileError as exc:  # not written by COMPLETE_STAGE: say so, never a 500
        log.error("job=%s stage=api file %s of output %d cannot be read: %s", job_id, name, index, exc)
        reason = f"output {index} of job {shown(job_id)}: its file {shown(name)} cannot be read"
        raise NotFound(reason) from None
    return Response(data, media_type=content_type, headers=file_headers(name, content_type))


def file_headers(name: str, content_type: str) -> dict[str, Any]:
    """The headers a served file goes with: inline if a raster image (what an <img> shows), else
    an attachment; the name is a checked one (no quote or slash to escape)."""
    disposition = "inline" if content_type in INLINE_TYPES else "attachment"
    return {**SAFETY_HEADERS, "Content-Disposition": f'{disposition}; filename="{name}"'}
