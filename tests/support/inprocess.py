"""A pipeline of the pipelines file run in this process, with the real models: no Redis, no workers.

Stages run in file order (each needs only earlier ones), each stage's function and params as
the file gives them, every value through the codec between stages as Redis carries it, and
all the items batched together at each model stage, as the model worker would batch them.
"""

from __future__ import annotations

from typing import Any

import torch

from shared import codecs
from shared.callables import resolve
from shared.messages import StageKind
from shared.pipeline_spec import INPUT, PipelinesConfig
from workers.inference import to_device
from workers.models.base import Model


def run_stages(
    config: PipelinesConfig, models: dict[str, Model], name: str, inputs: list[Any]
) -> list[dict[str, Any]]:
    """Every stage's value for every item ({stage name: value}, `input` included)."""
    pipeline = config.pipelines[name]
    values: list[dict[str, Any]] = [{INPUT: inp} for inp in inputs]
    for stage in pipeline.stages:
        needs = [[codecs.decode(codecs.encode(item[n])) for n in stage.needs] for item in values]
        if stage.kind == StageKind.model:
            model = models[stage.model or ""]
            with torch.inference_mode():
                batch = to_device(model.collate([args[0] for args in needs]), torch.device("cpu"))
                outputs = model.split(model.predict(batch))
        else:
            fn = resolve(stage.fn or "")
            outputs = [fn(*args, **stage.params) for args in needs]
        for item, output in zip(values, outputs, strict=True):
            item[stage.name] = output
    return values


def run_pipeline(
    config: PipelinesConfig, models: dict[str, Model], name: str, inputs: list[Any]
) -> list[Any]:
    """Each item's final value (its result, as the job's output would hold it)."""
    sink = config.pipelines[name].sink.name
    return [codecs.decode(codecs.encode(item[sink])) for item in run_stages(config, models, name, inputs)]
