"""Stages done by hand on a Store, no worker class: what the API tests' pipeline
(tests/support/api.py: pre -> m -> post) would compute, or every queued item failed outright."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from shared import keys
from shared.pipeline_spec import load_pipelines
from workers.store import Entry, StageResult, Store


def run_stage(entry: Entry, values: list[Any]) -> StageResult:
    """What the test pipeline's stages do, by hand: pre -> size, m -> size * 10, post -> JSON."""
    stage = entry.item.stage
    if stage == "pre":
        return StageResult(entry, value={"size": len(values[0]["image"])})
    if stage == "m":
        return StageResult(entry, value={"score": values[0]["size"] * 10})
    return StageResult(entry, value={"score": values[0]["score"], "index": entry.item.index})


def run_step(store: Store, group: str, streams: list[str]) -> int:
    """Read and complete whatever is queued for one group (in reverse order); returns how many."""
    entries = store.read(group, "test", streams, count=100, block_ms=None)
    if not entries:
        return 0
    values = store.load(entries)
    results = [run_stage(e, v) for e, v in zip(entries, values) if v is not None]
    store.complete(group, list(reversed(results)))
    return len(entries)


def groups_of(store: Store) -> list[tuple[str, list[str]]]:
    """Each consumer group with its streams, the groups made."""
    config = store.config
    groups = [
        (keys.CPU_GROUP, config.cpu_streams()),
        (keys.MODEL_GROUP, list(config.model_streams().values())),
    ]
    for group, streams in groups:
        store.ensure_groups(streams, group)
    return groups


def finish_everything(client: redis.Redis, settings_file: Path) -> int:
    """Fail every queued item at whatever stage it is (an item that fails is finished); returns
    how many items finished."""
    store = Store(client, load_pipelines(settings_file), ttl_s=600)
    groups = groups_of(store)
    finished = 0
    while True:
        moved = 0
        for group, streams in groups:
            entries = store.read(group, "test", streams, count=1000, block_ms=None)
            values = store.load(entries)
            results = [StageResult(e, error="stopped by the test") for e, v in zip(entries, values) if v]
            finished += sum(1 for r in store.complete(group, results) if r >= 2)
            moved += len(entries)
        if not moved:
            return finished
