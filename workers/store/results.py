"""The store's results side: recording stage results through COMPLETE_STAGE (a final result's
files lifted out first, workers/output_files.py), acknowledging their entries in the same step."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared import codecs, keys
from shared.files import DEFAULT_MAX_FILE_BYTES, FileError
from shared.messages import ItemOutput, ItemStatus, now_ms
from shared.pipeline_spec import INPUT, PipelinesConfig
from shared.redis import jobs as job_scripts
from workers.output_files import lift
from workers.scripted_pipeline import ScriptedPipeline
from workers.store.streams import Entry


@dataclass(frozen=True)
class StageResult:
    """What one stage made of one entry: a value, or the reason the item failed."""

    entry: Entry
    value: Any = None
    error: str | None = None
    # Given up after too many deliveries: fields of its dead-letter entry (needs `error`)
    dead_letter: dict[str, str] | None = None
    # The stage whose output `value` is, when not the entry's own: the postprocess stage the
    # model worker ran on the model's row (workers/fusion.py); recorded as if that stage ran.
    stage: str | None = None


def need_field(need: str) -> str:
    """The item-hash field a stage's need is read from."""
    return keys.INPUT_FIELD if need == INPUT else keys.stage_output_field(need)


class Results:
    def __init__(
        self,
        client: redis.Redis,
        config: PipelinesConfig,
        ttl_s: int,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.redis = client
        self.config = config
        self.ttl_s = ttl_s
        self.max_file_bytes = max_file_bytes  # DLPIPE_MAX_OUTPUT_FILE_BYTES: one output file at most

    def complete(
        self,
        group: str,
        results: list[StageResult],
        counters: Mapping[str, Mapping[str, int | float]] | None = None,
    ) -> list[job_scripts.CompleteOutcome]:
        """Record every result (and acknowledge its entry) in one round trip; see COMPLETE_STAGE.

        `counters` (hash key -> field -> increment) are added in the same round trip, after
        the results: HINCRBY for an int, HINCRBYFLOAT for a float. Returns the results' replies.
        """
        pipe = ScriptedPipeline(self.redis)
        stamp = now_ms()
        for result in results:
            self.complete_one(pipe, group, result, stamp)
        counted = len(pipe)
        for key, fields in (counters or {}).items():
            for name, amount in fields.items():
                if isinstance(amount, float):
                    pipe.pipe.hincrbyfloat(key, name, amount)
                else:
                    pipe.pipe.hincrby(key, name, amount)
        return pipe.execute(counts_from=counted)[: len(results)]

    def complete_one(self, pipe: ScriptedPipeline, group: str, result: StageResult, stamp: int) -> None:
        item = result.entry.item
        pipeline = self.config.pipelines[item.pipeline]
        stage = pipeline.stage(result.stage or item.stage)
        final_json, failed, payload = "", False, b""
        error, value, field = result.error, result.value, keys.stage_output_field(stage.name)
        if error is None and stage.name == pipeline.sink.name:
            # The result's files (shared/files.py) go in ARGV 6 and 7, unused for a final result.
            try:
                lifted = lift(value, job_id=item.job_id, index=item.index, max_bytes=self.max_file_bytes)
                value, field, payload = lifted.result, lifted.manifest, lifted.payload
                json.dumps(value, allow_nan=False)
            except FileError as exc:
                error = f"stage {stage.name!r}: {exc}"
            except (TypeError, ValueError) as exc:
                error = f"stage {stage.name!r} returned a result that is not JSON: {exc}"
        if error is None and stage.name != pipeline.sink.name:
            try:
                payload = codecs.encode(value)
            except codecs.CodecError as exc:
                error = f"stage {stage.name!r} returned a value that cannot travel: {exc}"
        if error is not None:
            output = ItemOutput(index=item.index, status=ItemStatus.failed, error=error)
            final_json, failed, field, payload = output.model_dump_json(), True, "", b""
        elif stage.name == pipeline.sink.name:
            output = ItemOutput(index=item.index, status=ItemStatus.succeeded, result=value)
            final_json = output.model_dump_json()
        downstream = [] if final_json else pipeline.downstream(stage.name)
        assert not result.dead_letter or result.error is not None, "an entry given up fails its item"
        pipe.call(
            job_scripts.complete_stage(
                job_id=item.job_id,
                index=item.index,
                pipeline=item.pipeline,
                stream=result.entry.stream,
                group=group,
                entry_id=result.entry.entry_id,
                now=stamp,
                ttl_s=self.ttl_s,
                output_field=field,
                payload=payload,
                final_json=final_json,
                failed=failed,
                downstream=[
                    job_scripts.Downstream(
                        # the item keeps its priority at every stage
                        keys.stream(
                            keys.priority_stream_name(pipeline.stream_name(d), result.entry.priority)
                        ),
                        d.name,
                        [need_field(n) for n in d.needs],
                    )
                    for d in downstream
                ],
                dead_letter=result.dead_letter,
            )
        )
