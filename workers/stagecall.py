"""One CPU stage on one item: `fn(*needs, **params)`, with the rules every worker applies the
same way (the preprocess workers, and the model worker for the postprocess stages it runs
itself, workers/fusion.py), so a stage's result does not depend on where it ran.

- an input that could not be decoded fails the item, saying so;
- an ItemError fails the item with its message, as is (bad input, not a bug);
- any other exception fails the item with `stage: Type: message`, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.codecs import CodecError
from shared.errors import ItemError
from shared.pipeline_spec import StageSpec
from workers.store import Entry, StageResult

log = logging.getLogger("workers.stages")


def call_stage(
    fn: Callable[..., Any], stage: StageSpec, entry: Entry, values: list[Any], as_stage: str | None = None
) -> StageResult:
    """The StageResult of `stage` on the entry's item; `as_stage` marks a result recorded as
    another stage's output than the entry's own (StageResult.stage)."""
    item = entry.item
    where = f"job={item.job_id} stage={stage.name} index={item.index}"
    undecodable = next((v for v in values if isinstance(v, CodecError)), None)
    if undecodable is not None:
        log.warning("%s input cannot be decoded: %s", where, undecodable)
        error = f"{stage.name}: input cannot be decoded: {undecodable}"
        return StageResult(entry, error=error, stage=as_stage)
    try:
        value = fn(*values, **stage.params)
    except ItemError as exc:
        log.info("%s item failed: %s", where, exc)
        return StageResult(entry, error=str(exc) or type(exc).__name__, stage=as_stage)
    except Exception as exc:
        log.exception("%s stage function raised", where)
        return StageResult(entry, error=f"{stage.name}: {type(exc).__name__}: {exc}", stage=as_stage)
    return StageResult(entry, value=value, stage=as_stage)
