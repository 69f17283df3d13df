"""Settings of the workers: the device, processes and threads, streams, leases, shutdown."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.cores import CoreSplit, available_cores, gpu_expected, split_cores
from shared.files import DEFAULT_MAX_FILE_BYTES
from shared.settings.group import SettingsGroup


def _default_split(data: dict[str, Any]) -> CoreSplit:
    """The default processes and threads for this machine's cores (shared/cores.py)."""
    return split_cores(available_cores(), gpu_expected(data.get("device")))


class WorkerSettings(SettingsGroup):
    # Workers
    device: str | None = Field(
        default=None, description="Torch device of the model worker; unset: cuda if available, else cpu."
    )
    preprocess_concurrency: int = Field(
        default_factory=lambda data: _default_split(data).preprocess,
        ge=1,
        description=(
            "Processes `dlpipe worker preprocess` runs (default: a fifth of the cores, at least 1; "
            "with a GPU all but 2)."
        ),
    )
    model_replicas: int = Field(
        default_factory=lambda data: _default_split(data).model_replicas,
        ge=1,
        le=64,
        description=(
            "Processes `dlpipe worker model` runs, each with every model, sharing the model streams "
            "(default: on a CPU one per core, at most 8; with a GPU 1)."
        ),
    )
    torch_threads: int = Field(
        default_factory=lambda data: _default_split(data).torch_threads,
        ge=1,
        description=(
            "Intra-op threads of each model worker process (default: 1, more when the cores outnumber "
            "the replicas; with a GPU 1)."
        ),
    )
    model_overlap: bool = Field(
        default=True,
        description=(
            "Model worker: take and collate the next batch, and record the last, in threads of their "
            "own while the device runs one (false: one step after the other)."
        ),
    )
    model_scheduler: Literal["efficiency", "oldest"] = Field(
        default="efficiency",
        description=(
            "How the model worker picks its next batch: `efficiency` (the model whose batch comes "
            "closest to its full-batch items per device-ms, from each model's measured cost curve, "
            "letting batches fill while the device is busy) or `oldest` (the model whose oldest "
            "entry came first, with what is queued)."
        ),
    )
    scheduler_max_age_ms: int = Field(
        default=500,
        ge=1,
        description=(
            "The `efficiency` scheduler's age bound: a model whose oldest held entry has waited this "
            "long goes first, so no model starves."
        ),
    )
    fuse_postprocess: bool = Field(
        default=True,
        description=(
            "The model worker runs a postprocess stage itself, on each row, when it is a model "
            "stage's only consumer and needs nothing else (one stream hop less per item)."
        ),
    )
    read_block_ms: int = Field(
        default=1000, ge=1, description="How long an idle worker blocks on its streams per step."
    )
    heartbeat_interval_ms: int = Field(
        default=2000, ge=100, description="How often workers announce themselves."
    )
    worker_ttl_ms: int = Field(
        default=10000, ge=500, description="A worker unseen for this long is taken as dead."
    )

    max_output_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        ge=1,
        le=256 * 1024 * 1024,
        description=(
            "Largest file one output may give (a face-blur JPEG): a bigger one fails its item, saying so. "
            "Files are kept in Redis with the job's outputs."
        ),
    )
    lease_ms: int = Field(
        default=60000,
        ge=100,
        description="An entry taken by a worker and not acknowledged for this long is reclaimed by another.",
    )
    max_deliveries: int = Field(
        default=3,
        ge=1,
        description="Deliveries after which an item that keeps failing or killing its worker is given up.",
    )
    stream_trim_interval_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How often each worker trims the entries every consumer group is done with from its "
            "streams (never one pending or not yet read)."
        ),
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="How long `dlpipe up` gives its children to stop after SIGTERM before killing them.",
    )
