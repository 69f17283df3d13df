"""A CPU worker's reads by priority: every step, each stage's READ_COUNT entries shared among
its priority streams (shared/priority.py: high first, a guaranteed share for the lower ones).

Each stage (a base stream name, cpu.<pipeline>.<stage>) has one stream per priority
(keys.stage_streams). One script reads them all in one round trip (READ_BY_PRIORITY, shared/redis/streams.py):
per stage, up to each priority's quota from that stage's Share, then the rest of its count,
high first. Only when that finds nothing does the worker block, on every stream at once
(XREADGROUP BLOCK): an idle worker wakes at the first arrival, whatever its priority. The step's
entries come high first, so a high item never waits behind the low ones read with it.
"""

from __future__ import annotations

from shared import keys
from shared.priority import ORDER, Share
from shared.redis import streams as stream_scripts
from workers.store import Entry, Store


class PriorityReader:
    def __init__(self, store: Store, group: str, consumer: str, stages: list[str], count: int) -> None:
        self.store = store
        self.group = group
        self.consumer = consumer
        self.stages = list(stages)  # base stream names
        self.count = count
        self.streams = [name for stage in self.stages for name in keys.stage_streams(stage)]
        self.shares = {stage: Share() for stage in self.stages}
        self._keys = [keys.stream(name) for name in self.streams]

    def read(self, block_ms: int | None) -> list[Entry]:
        """This step's entries, high first (block_ms None: never block)."""
        if not self.stages:
            return []
        plans = [self.shares[stage].plan(self.count) for stage in self.stages]
        read = stream_scripts.read_by_priority(
            stream_keys=self._keys,
            group=self.group,
            consumer=self.consumer,
            count=self.count,
            quotas=[q for plan in plans for q in plan],
        ).run(self.store.redis)
        taken = read.taken
        n = len(ORDER)
        for i, (stage, plan) in enumerate(zip(self.stages, plans, strict=True)):
            self.shares[stage].charge(plan, taken[n * i : n * i + n])
        entries = self.store.entries(self.group, read.reply)
        if not entries and block_ms is not None:
            entries = self.store.read(self.group, self.consumer, self.streams, self.count, block_ms)
        return sorted(entries, key=lambda e: e.priority.rank)  # stable: in stream order otherwise
