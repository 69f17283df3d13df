"""What pipelines this deployment runs, and how to call them."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import ConfigDep, PipelineDep, SettingsDep
from services.api.inputs import INPUT_FORMATS, MULTIPART_FILES_FIELD, MULTIPART_OPTIONS_FIELD
from services.api.schemas import BatchingInfo, ErrorBody, InputInfo, PipelineInfo, StageInfo
from shared.pipeline_spec import PipelinesConfig, PipelineSpec
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["pipelines"])


def describe_pipeline(pipeline: PipelineSpec, config: PipelinesConfig, settings: Settings) -> PipelineInfo:
    fmt = INPUT_FORMATS.get(pipeline.input)
    stages = []
    for stage in pipeline.stages:
        model = config.models.get(stage.model) if stage.model else None
        batching = BatchingInfo(**model.batching.model_dump()) if model and model.batching else None
        by_device = (
            {device: BatchingInfo(**b.model_dump()) for device, b in model.batching_by_device.items()}
            if model and model.batching_by_device
            else None
        )
        stages.append(
            StageInfo(
                name=stage.name,
                kind=stage.kind,
                needs=stage.needs,
                fn=stage.fn,
                model=stage.model,
                batching=batching,
                batching_by_device=by_device,
            )
        )
    return PipelineInfo(
        name=pipeline.name,
        description=pipeline.description,
        input=InputInfo(
            kind=pipeline.input.value,
            json_fields=fmt.json_fields if fmt else [],
            multipart_field=MULTIPART_FILES_FIELD if fmt and fmt.takes_files else None,
            options_field=MULTIPART_OPTIONS_FIELD if fmt and fmt.options_model else None,
            max_inputs=settings.max_inputs_per_job,
            max_input_bytes=settings.max_input_bytes,
        ),
        output=pipeline.output,
        stages=stages,
    )


@router.get(
    "/pipelines",
    response_model=list[PipelineInfo],
    summary="List pipelines",
    description="Every pipeline this deployment runs (by name): its input, output and stages.",
)
async def list_pipelines(config: ConfigDep, settings: SettingsDep) -> list[PipelineInfo]:
    return [describe_pipeline(p, config, settings) for _, p in sorted(config.pipelines.items())]


@router.get(
    "/pipelines/{name}",
    response_model=PipelineInfo,
    summary="Describe a pipeline",
    description=(
        "How to call one pipeline (its input kind, the JSON fields of one input, the multipart "
        "field), what its results hold, and the stages it runs, with each model's batching."
    ),
    responses={
        404: {"model": ErrorBody, "description": "No such pipeline."},
        422: {"model": ErrorBody, "description": "The request is not valid; `field` names what."},
    },
)
async def get_pipeline_info(pipeline: PipelineDep, config: ConfigDep, settings: SettingsDep) -> PipelineInfo:
    return describe_pipeline(pipeline, config, settings)
