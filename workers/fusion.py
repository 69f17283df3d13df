"""Postprocess stages the model worker runs itself, on each row of a forward pass, instead of
queueing the row for a preprocess worker (DLPIPE_FUSE_POSTPROCESS).

A model stage is fused with the stage after it when that stage is its only consumer, is a
`postprocess` stage (by the pipelines file's convention: cheap shaping of a model's output, such
as a top-k), and needs nothing but the model's output. The item then skips a stream hop: no
XADD of the row, no read, load and record by a preprocess worker; the model worker records the
postprocess stage's output (the item's result, when it is final) in the round trip it makes
anyway. A consumer that is a preprocess stage, a join, or one of several stays a stage of its
own. The call follows the same rules as in a preprocess worker (workers/stagecall.py), so an
item's result and errors are the same fused or not; the stage's time still counts as its own
in /metrics. It runs on the model worker's recorder thread, off the device's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.messages import StageKind
from shared.pipeline_spec import PipelinesConfig, PipelineSpec, StageSpec
from workers import runtime
from workers.metrics import StageMetrics
from workers.stagecall import call_stage
from workers.store import StageResult


def fused_stage(pipeline: PipelineSpec, stage: StageSpec) -> StageSpec | None:
    """The postprocess stage to run right after model stage `stage`, in the model worker."""
    if stage.kind != StageKind.model:
        return None
    after = pipeline.downstream(stage.name)
    if len(after) != 1:
        return None
    post = after[0]
    if post.kind != StageKind.postprocess or post.needs != [stage.name]:
        return None
    return post


class Fusion:
    """The fused stages of the pipelines that use these models, and their functions."""

    def __init__(self, config: PipelinesConfig, models: list[str], enabled: bool = True) -> None:
        self.stages: dict[tuple[str, str], StageSpec] = {}  # (pipeline, model stage) -> postprocess
        if enabled:
            for pipeline in config.pipelines.values():
                for stage in pipeline.stages:
                    post = fused_stage(pipeline, stage) if stage.model in models else None
                    if post is not None:
                        self.stages[(pipeline.name, stage.name)] = post
        self.functions: dict[str, Callable[..., Any]] = {
            post.fn: runtime.resolve_stage_function(pipeline, post)
            for (pipeline, _), post in self.stages.items()
            if post.fn
        }

    def apply(self, results: list[StageResult], metrics: StageMetrics) -> list[StageResult]:
        """Each succeeded row of a fused model stage -> its postprocess stage's result."""
        if not self.stages:
            return results
        out = []
        for result in results:
            item = result.entry.item
            post = self.stages.get((item.pipeline, item.stage))
            if post is None or result.error is not None:
                out.append(result)
                continue
            fn = self.functions[post.fn or ""]
            out.append(
                metrics.timed(
                    lambda e, v, p=post, f=fn: call_stage(f, p, e, v, as_stage=p.name),
                    result.entry,
                    [result.value],
                    stage=post.name,
                )
            )
        return out
