"""The workers' side of Redis: read work items, load their inputs, record stage results.

Reads go through consumer groups; an entry is acknowledged only in the same atomic step
that writes its output (shared/redis/lua), so a worker that dies mid-batch leaves its
entries pending for another. Each call is one round trip for the whole batch.

One module per role, behind the `Store` facade the workers hold:
- streams.py: consumer groups, reading entries (Entry), acknowledging those with nothing to run;
- inputs.py: loading what each entry's stage needs (values, job blobs), marking jobs running,
  settling the entries of jobs that ended or passed their deadline;
- results.py: recording stage results (StageResult) through COMPLETE_STAGE, files and all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from shared.files import DEFAULT_MAX_FILE_BYTES
from shared.messages import WorkItem
from shared.pipeline_spec import PipelinesConfig, StageSpec
from shared.redis import jobs as job_scripts
from workers.store.inputs import Inputs
from workers.store.results import Results, StageResult
from workers.store.streams import Entry, Streams

__all__ = ["Entry", "StageResult", "Store"]


class Store:
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
        self.streams = Streams(client, config)
        self.results = Results(client, config, ttl_s, max_file_bytes)
        self.inputs = Inputs(client, self.streams, self.results)

    @property
    def max_file_bytes(self) -> int:
        """DLPIPE_MAX_OUTPUT_FILE_BYTES: one output file at most."""
        return self.results.max_file_bytes

    def stage_of(self, item: WorkItem) -> StageSpec:
        return self.streams.stage_of(item)

    def ensure_groups(self, streams: list[str], group: str) -> None:
        """Create the consumer group on each stream (from its start, so nothing queued is missed)."""
        self.streams.ensure_groups(streams, group)

    def read(
        self,
        group: str,
        consumer: str,
        streams: list[str],
        count: int,
        block_ms: int | None,
        *,
        pending: bool = False,
    ) -> list[Entry]:
        """New entries of `streams` (names), or this consumer's pending ones: Streams.read."""
        return self.streams.read(group, consumer, streams, count, block_ms, pending=pending)

    def entries(self, group: str, reply: Any) -> list[Entry]:
        """The Entries of an XREADGROUP reply: Streams.entries."""
        return self.streams.entries(group, reply)

    def entry(self, group: str, stream_key: str, entry_id: str, fields: dict[Any, Any]) -> Entry | None:
        """The Entry for a stream entry's fields; None (acknowledged, logged) if malformed."""
        return self.streams.entry(group, stream_key, entry_id, fields)

    def ack_gone(self, group: str, entries: list[Entry]) -> None:
        """Acknowledge entries whose item no longer exists (finished already, or expired)."""
        self.streams.ack_gone(group, entries)

    def load(self, entries: list[Entry]) -> list[list[Any] | None]:
        """Per entry, the values its stage needs, or None where there is nothing to run: Inputs.load."""
        return self.inputs.load(entries)

    def complete(
        self,
        group: str,
        results: list[StageResult],
        counters: Mapping[str, Mapping[str, int | float]] | None = None,
    ) -> list[job_scripts.CompleteOutcome]:
        """Record every result (and acknowledge its entry) in one round trip: Results.complete."""
        return self.results.complete(group, results, counters)
