"""The store's stream side: consumer groups, reading entries (each checked against the
pipelines file), acknowledging the ones with nothing to run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from shared import codecs, keys
from shared.messages import WorkItem
from shared.pipeline_spec import PipelinesConfig, StageSpec
from shared.priority import Priority
from shared.redis_full import is_out_of_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """A stream entry taken by this worker: where it came from and what it asks for."""

    stream: str  # the stream's key
    entry_id: str
    item: WorkItem

    @property
    def priority(self) -> Priority:
        """Its job's priority: the stream it came from says (keys.stream_priority)."""
        return keys.stream_priority(self.stream)


class Streams:
    def __init__(self, client: redis.Redis, config: PipelinesConfig) -> None:
        self.redis = client
        self.config = config

    def stage_of(self, item: WorkItem) -> StageSpec:
        return self.config.pipelines[item.pipeline].stage(item.stage)

    def ensure_groups(self, streams: list[str], group: str) -> None:
        """Create the consumer group on each stream (from its start, so nothing queued is missed)."""
        for name in streams:
            try:
                self.redis.xgroup_create(keys.stream(name), group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    continue
                # Redis over its maxmemory refuses XGROUP CREATE even for a group that exists.
                if not (is_out_of_memory(exc) and self._has_group(keys.stream(name), group)):
                    raise

    def _has_group(self, stream_key: str, group: str) -> bool:
        try:
            found = self.redis.xinfo_groups(stream_key)
        except redis.ResponseError:  # no such stream
            return False
        return any(codecs.text(g.get("name", g.get(b"name", b""))) == group for g in found)

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
        """New entries from any of `streams` (names, not keys), at most `count` per stream.

        block_ms=None does not block. pending=True instead re-reads the entries this
        consumer was given but has not acknowledged (after an error mid-batch); it never
        blocks. Malformed entries (no such pipeline or stage, or deleted from the stream
        while pending) are acknowledged and logged: there is no job to fail.
        """
        start = "0" if pending else ">"
        reply = self.redis.xreadgroup(
            group,
            consumer,
            {keys.stream(s): start for s in streams},
            count=count,
            block=None if pending else block_ms,
        )
        return self.entries(group, reply)

    def entries(self, group: str, reply: Any) -> list[Entry]:
        """The Entries of an XREADGROUP reply ([[stream key, [[id, fields]...]]...], the fields a
        dict as redis-py gives them or a flat list as a script does); malformed ones are
        acknowledged and logged (`entry`)."""
        entries: list[Entry] = []
        for stream_key, messages in reply or []:
            for entry_id, fields in messages:
                if isinstance(fields, list):
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
                entry = self.entry(group, codecs.text(stream_key), codecs.text(entry_id), fields or {})
                if entry is not None:
                    entries.append(entry)
        return entries

    def entry(self, group: str, stream_key: str, entry_id: str, fields: dict[Any, Any]) -> Entry | None:
        """The Entry for a stream entry's fields; None (acknowledged, logged) if malformed."""
        try:
            item = WorkItem.from_fields(fields)
            self.stage_of(item)
        except (KeyError, ValueError) as exc:
            log.error("dropping malformed entry %s on %s: %s", entry_id, stream_key, exc)
            self.redis.xack(stream_key, group, entry_id)
            return None
        return Entry(stream=stream_key, entry_id=entry_id, item=item)

    def ack_gone(self, group: str, entries: list[Entry]) -> None:
        """Acknowledge entries whose item no longer exists (finished already, or expired)."""
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xack(entry.stream, group, entry.entry_id)
        pipe.execute()
