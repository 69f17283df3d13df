"""The API's response models (JobView itself lives in shared.messages). The request models
are in services/api/input_models.py and services/api/request_schemas.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.messages import JobStatus, Progress, StageKind


class ErrorBody(BaseModel):
    """Every error answer: what is wrong and, for bad requests, which field."""

    detail: str = Field(examples=["inputs[2].image_base64: not valid base64"])
    field: str | None = Field(default=None, examples=["inputs[2].image_base64"])


class InputInfo(BaseModel):
    kind: str = Field(description="The pipeline's input kind.", examples=["image"])
    json_fields: list[str] = Field(
        description="Fields of one element of `inputs` in a JSON request.", examples=[["image_base64"]]
    )
    multipart_field: str | None = Field(
        description="Form field carrying one file per input in a multipart request (null: JSON only).",
        examples=["files"],
    )
    options_field: str | None = Field(
        default=None,
        description="Form field of a multipart request holding options as JSON text (video: interval, fps).",
        examples=["options"],
    )
    max_inputs: int = Field(description="Most inputs one job may hold (a video: each frame counts).")
    max_input_bytes: int = Field(description="Largest single input, in decoded bytes.")


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_batch_delay_ms: float


class StageInfo(BaseModel):
    name: str
    kind: StageKind
    needs: list[str] = Field(description="What the stage reads: `input` and/or earlier stages.")
    fn: str | None = Field(default=None, description="The function of a pre/postprocess stage.")
    model: str | None = Field(default=None, description="The model of a model stage.")
    batching: BatchingInfo | None = Field(
        default=None, description="How the model worker batches this model's items (model stages)."
    )
    batching_by_device: dict[str, BatchingInfo] | None = Field(
        default=None,
        description=(
            "Device types (`cuda`, ...) on which the model worker batches otherwise than `batching` says."
        ),
    )


class PipelineInfo(BaseModel):
    name: str = Field(examples=["image-classify"])
    description: str
    input: InputInfo
    output: dict[str, Any] = Field(description="What one item's result holds.")
    stages: list[StageInfo]


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="`ready` or `unavailable`.", examples=["ready"])
    reason: str | None = Field(default=None, examples=["no live worker for stream model.efficientnet_lite0"])
    workers: int = Field(default=0, description="Live workers seen.")


class JobSummary(BaseModel):
    """One row of `GET /v1/jobs`: a job without its outputs."""

    id: str
    pipeline: str
    status: JobStatus
    progress: Progress
    created_at: datetime
    completed_at: datetime | None = Field(default=None, description="Null until the job has ended.")
    metadata: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[JobSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page; null: no more jobs. A page may hold fewer "
        "than `limit` jobs and still have a cursor (the index held jobs that had expired).",
    )
