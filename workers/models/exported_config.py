"""The parameters every exported-model class takes, checked in one place, with errors that name
the field (`params.path: no such file ...`): what the pipelines file says about a model file.

    path        the exported file (absolute, or relative to the worker's working directory)
    input_size  [height, width] (or one side) of the images the stage before gives: the model is
                tried on a batch of that size when it loads, and a model that refuses it fails there
    layout      NCHW or NHWC: the layout the model takes (images arrive as uint8 NHWC)
    dtype       float32, float16 or uint8: the dtype the model takes
    scale, mean, std
                normalisation, in this order: x * scale, then (x - mean) / std (mean and std: one
                number or one per channel, RGB); defaults: none (1, 0, 1); none allowed with uint8
    output      raw (every output tensor, per item, as JSON lists) or softmax_top_k (a softmax over
                the model's one output [N, classes], the best k classes with their names)
    labels      softmax_top_k: a text file, one class name per line, as many as the model has classes
    k           softmax_top_k: how many classes (default 5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.transforms.labels import read_labels


class ExportedModelError(ValueError):
    """An exported model's entry is wrong; `field` names the param (`path`, `input_size`, ...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"params.{field}: {reason}")
        self.field = field


Channels = tuple[float, float, float]


class ExportedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    input_size: tuple[int, int] = (224, 224)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    scale: float = 1.0
    mean: Channels = (0.0, 0.0, 0.0)
    std: Channels = (1.0, 1.0, 1.0)
    output: Literal["raw", "softmax_top_k"] = "raw"
    labels: str | None = None
    k: int = Field(default=5, ge=1)

    @field_validator("input_size", mode="before")
    @classmethod
    def _one_side(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("input_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError(f"sides must be at least 1 pixel, got {list(value)}")
        return value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _per_channel(cls, value: Any) -> Any:
        """One number for every channel, or one per channel (RGB)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (value,) * 3
        if isinstance(value, (list, tuple)) and len(value) != 3:
            raise ValueError(f"one number, or one per channel (3), got {len(value)}")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero(cls, value: Channels) -> Channels:
        if 0 in value:
            raise ValueError("std must not be 0")
        return value


def parse_config(params: dict[str, Any]) -> tuple[ExportedConfig, tuple[str, ...] | None]:
    """The checked params, and the class names (softmax_top_k); ExportedModelError names the field."""
    try:
        config = ExportedConfig.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown param (known: {', '.join(ExportedConfig.model_fields)})"
        raise ExportedModelError(field, message) from None
    if config.dtype == "uint8" and (config.scale, config.mean, config.std) != (1.0, (0.0,) * 3, (1.0,) * 3):
        raise ExportedModelError(
            "dtype", "a uint8 input cannot be normalised (scale, mean, std): the model does it"
        )
    path = Path(config.path)
    if not path.is_file():
        raise ExportedModelError("path", f"no such file: {path.resolve()}")
    if config.output != "softmax_top_k":
        if config.labels is not None:
            raise ExportedModelError("labels", "only output: softmax_top_k reads a labels file")
        return config, None
    if config.labels is None:
        raise ExportedModelError(
            "labels", "output: softmax_top_k needs a labels file (one class name a line)"
        )
    try:
        names = read_labels(config.labels)
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportedModelError("labels", f"cannot read {config.labels}: {exc}") from None
    if not names:
        raise ExportedModelError("labels", f"{config.labels} holds no class names")
    if config.k > len(names):
        raise ExportedModelError("k", f"{config.k} is more than the {len(names)} classes in {config.labels}")
    return config, names
