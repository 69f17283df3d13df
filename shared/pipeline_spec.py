"""The pipelines file: models, pipelines, and the graph of stages each pipeline runs.

A pipeline is a graph of stages. Each stage names what it needs: `input` (the job's
original input) and/or earlier stages' outputs; by default it needs the stage listed
before it (or `input`, for the first). Exactly one stage is final: its output is the
item's result. The file is validated when it is loaded, with errors that name the
pipeline and stage.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import keys
from shared.messages import StageKind

INPUT = "input"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class PipelineConfigError(ValueError):
    """The pipelines file is not valid; the message says where and why."""


class InputKind(str, Enum):
    image = "image"
    text = "text"
    video = "video"  # one item per frame time (shared/video.py); one output per video


class Batching(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(ge=1)
    max_batch_delay_ms: float = Field(ge=0)


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    class_path: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    # The name the model is known by elsewhere (Hugging Face, OpenAI clients): `POST /v1/embeddings`
    # takes it as `model` for a text pipeline that runs this model (docs/protocols.md).
    public_name: str | None = Field(default=None, min_length=1, max_length=200)
    batching: Batching | None = None
    # Batching that pays on a GPU can cost on a CPU (the bench's model-only table shows where):
    # a device type named here batches its own way, any other as `batching` says.
    batching_by_device: dict[str, Batching] = Field(default_factory=dict)

    def batching_for(self, device_type: str) -> Batching | None:
        """How the model worker batches this model on a device of this type."""
        return self.batching_by_device.get(device_type, self.batching)


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: StageKind
    fn: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] = Field(default_factory=list)

    @property
    def group(self) -> str:
        return keys.MODEL_GROUP if self.kind == StageKind.model else keys.CPU_GROUP


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    input: InputKind
    output: dict[str, Any] = Field(default_factory=dict)
    stages: list[StageSpec]

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"pipeline {self.name!r} has no stage {name!r}")

    def stream_name(self, stage: StageSpec) -> str:
        if stage.kind == StageKind.model:
            return keys.model_stream_name(stage.model or "")
        return keys.cpu_stream_name(self.name, stage.name)

    def sources(self) -> list[StageSpec]:
        """Stages that need only the original input: where an item starts."""
        return [s for s in self.stages if set(s.needs) <= {INPUT}]

    def downstream(self, name: str) -> list[StageSpec]:
        return [s for s in self.stages if name in s.needs]

    @property
    def sink(self) -> StageSpec:
        finals = [s for s in self.stages if not self.downstream(s.name)]
        return finals[0]


class PipelinesConfig(BaseModel):
    models: dict[str, ModelSpec]
    pipelines: dict[str, PipelineSpec]

    def cpu_streams(self) -> list[str]:
        return sorted(
            p.stream_name(s) for p in self.pipelines.values() for s in p.stages if s.kind != StageKind.model
        )

    def model_streams(self, models: list[str] | None = None) -> dict[str, str]:
        """Model name -> stream name, for the models some pipeline uses (or the ones asked for)."""
        used = {s.model for p in self.pipelines.values() for s in p.stages if s.kind == StageKind.model}
        names = sorted(m for m in used if m is not None and (models is None or m in models))
        return {name: keys.model_stream_name(name) for name in names}

    def work_streams(self) -> list[str]:
        """Every stream name of work items of the stack: each CPU stage's and each model's, at
        every priority (keys.stage_streams). What readiness, metrics and status list."""
        bases = self.cpu_streams() + list(self.model_streams().values())
        return [name for base in bases for name in keys.stage_streams(base)]


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def _check_stage(pipeline: str, stage: StageSpec, models: dict[str, ModelSpec]) -> None:
    where = f"pipeline {pipeline!r}, stage {stage.name!r}"
    if not _NAME.match(stage.name) or stage.name == INPUT:
        raise PipelineConfigError(f"{where}: invalid stage name (letters, digits, '-', '_'; not 'input')")
    if stage.kind == StageKind.model:
        if stage.fn:
            raise PipelineConfigError(f"{where}: a model stage names a `model`, not a `fn`")
        if not stage.model:
            raise PipelineConfigError(f"{where}: a model stage needs `model: <name>`")
        if stage.model not in models:
            raise PipelineConfigError(
                f"{where}: unknown model {stage.model!r} (known: {', '.join(sorted(models)) or 'none'})"
            )
        if len(stage.needs) != 1:
            raise PipelineConfigError(
                f"{where}: a model stage takes exactly one input, needs {stage.needs}; "
                "join several values in a preprocess stage first"
            )
        model = models[stage.model]
        if model.batching is None:
            raise PipelineConfigError(
                f"{where}: model {stage.model!r} has no batching settings "
                "(batching: {max_batch_size: N, max_batch_delay_ms: T})"
            )
        unknown = sorted(set(model.batching_by_device) - set(DEVICE_TYPES))
        if unknown:
            raise PipelineConfigError(
                f"{where}: model {stage.model!r}: batching_by_device names unknown device types "
                f"{', '.join(unknown)} (known: {', '.join(DEVICE_TYPES)})"
            )
    else:
        if stage.model:
            raise PipelineConfigError(f"{where}: a {stage.kind.value} stage names a `fn`, not a `model`")
        if not stage.fn or not _CALLABLE.match(stage.fn):
            raise PipelineConfigError(f"{where}: `fn` must be 'package.module:function', got {stage.fn!r}")


def _find_cycle(stages: dict[str, StageSpec]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for need in stages[name].needs:
            if need == INPUT:
                continue
            if state.get(need) == 1:
                return path[path.index(need) :] + [need]
            if need not in state and (found := visit(need)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in stages:
        if name not in state and (found := visit(name)):
            return found
    return None


def _check_graph(pipeline: PipelineSpec) -> None:
    name = pipeline.name
    if not pipeline.stages:
        raise PipelineConfigError(f"pipeline {name!r}: has no stages")
    stages: dict[str, StageSpec] = {}
    for stage in pipeline.stages:
        if stage.name in stages:
            raise PipelineConfigError(f"pipeline {name!r}, stage {stage.name!r}: defined twice")
        stages[stage.name] = stage
    for stage in pipeline.stages:
        for need in stage.needs:
            if need != INPUT and need not in stages:
                raise PipelineConfigError(
                    f"pipeline {name!r}, stage {stage.name!r}: needs {need!r}, which no stage makes "
                    f"(stages: {', '.join(stages)}; or 'input')"
                )
    cycle = _find_cycle(stages)
    if cycle:
        raise PipelineConfigError(f"pipeline {name!r}: stages form a cycle: {' -> '.join(cycle)}")
    finals = [s.name for s in pipeline.stages if not pipeline.downstream(s.name)]
    if len(finals) != 1:
        raise PipelineConfigError(
            f"pipeline {name!r}: must end in exactly one final stage, found {len(finals)} "
            f"({', '.join(finals)}); add a stage that needs them all"
        )
    if pipeline.stage(finals[0]).kind == StageKind.model:
        raise PipelineConfigError(
            f"pipeline {name!r}, stage {finals[0]!r}: the final stage must be a postprocess stage "
            "that turns model output into a JSON result"
        )


def parse_pipelines(data: Any) -> PipelinesConfig:
    """Validate the parsed YAML document and return the config, or raise PipelineConfigError."""
    if not isinstance(data, dict):
        raise PipelineConfigError("the pipelines file must be a mapping with `models` and `pipelines`")
    raw_models = data.get("models") or {}
    raw_pipelines = data.get("pipelines") or {}
    if not isinstance(raw_models, dict) or not isinstance(raw_pipelines, dict):
        raise PipelineConfigError("`models` and `pipelines` must be mappings keyed by name")
    if not raw_pipelines:
        raise PipelineConfigError("the pipelines file declares no pipelines")
    models: dict[str, ModelSpec] = {}
    for model_name, body in raw_models.items():
        if ":" in str(model_name):  # keys.stage_streams: `model.<model>:high` names a priority
            raise PipelineConfigError(f"model {model_name!r}: invalid name (no ':')")
        try:
            models[model_name] = ModelSpec.model_validate({**(body or {}), "name": model_name})
        except ValidationError as exc:
            raise PipelineConfigError(f"model {model_name!r}: {_format_validation_error(exc)}") from None
        if not _CALLABLE.match(models[model_name].class_path):
            raise PipelineConfigError(f"model {model_name!r}: `class` must be 'package.module:Class'")
    pipelines: dict[str, PipelineSpec] = {}
    for pipeline_name, body in raw_pipelines.items():
        if not _NAME.match(str(pipeline_name)):
            raise PipelineConfigError(f"pipeline {pipeline_name!r}: invalid name")
        body = dict(body or {})
        stages = body.get("stages")
        if isinstance(stages, list):  # default `needs`: the stage before, or the input
            previous = INPUT
            filled = []
            for stage in stages:
                stage = dict(stage) if isinstance(stage, dict) else stage
                if isinstance(stage, dict):
                    stage.setdefault("needs", [previous])
                    previous = stage.get("name", previous)
                filled.append(stage)
            body["stages"] = filled
        try:
            pipeline = PipelineSpec.model_validate({**body, "name": pipeline_name})
        except ValidationError as exc:
            raise PipelineConfigError(
                f"pipeline {pipeline_name!r}: {_format_validation_error(exc)}"
            ) from None
        for stage in pipeline.stages:
            _check_stage(pipeline_name, stage, models)
        _check_graph(pipeline)
        pipelines[pipeline_name] = pipeline
    return PipelinesConfig(models=models, pipelines=pipelines)


def load_pipelines(path: Path) -> PipelinesConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PipelineConfigError(f"cannot read pipelines file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineConfigError(f"pipelines file {path} is not valid YAML: {exc}") from None
    return parse_pipelines(data)
