"""The code a pipelines file names: `package.module:attr` for stage functions and model classes."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from shared.pipeline_spec import PipelineConfigError, PipelinesConfig


def resolve(path: str) -> Any:
    """Import 'package.module:attr' and return the attribute."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PipelineConfigError(f"{module_name!r} has no attribute {attr!r}") from None


def check_callables(config: PipelinesConfig, *, import_them: bool) -> None:
    """Check every stage function and model class exists.

    With import_them=False only the modules are located (no import: the API must not
    import torch); the workers pass True and import everything they will run.
    """
    targets = [(f"model {m.name!r}", m.class_path) for m in config.models.values()]
    for pipeline in config.pipelines.values():
        for stage in pipeline.stages:
            if stage.fn:
                targets.append((f"pipeline {pipeline.name!r}, stage {stage.name!r}", stage.fn))
    for where, target in targets:
        module_name = target.partition(":")[0]
        try:
            if import_them:
                resolve(target)
            elif importlib.util.find_spec(module_name) is None:
                raise ModuleNotFoundError(module_name)
        except (ImportError, PipelineConfigError) as exc:
            raise PipelineConfigError(f"{where}: cannot load {target!r}: {exc}") from None


def check_models(config: PipelinesConfig) -> None:
    """Every model entry's params, as its class checks them (`Model.check`: build it, and for
    an exported model load its file on the CPU and try one batch), with no worker running.
    Imports the model classes (and torch): `dlpipe check` only, never the API."""
    for name, spec in config.models.items():
        cls = resolve(spec.class_path)
        check = getattr(cls, "check", None)
        try:
            if callable(check):
                check(spec.params)
            else:  # a class that is not a Model subclass: building it is the check
                cls(**spec.params)
        except TypeError as exc:
            raise PipelineConfigError(f"model {name!r}: params: {exc}") from None
        except Exception as exc:
            raise PipelineConfigError(f"model {name!r}: {exc}") from None
