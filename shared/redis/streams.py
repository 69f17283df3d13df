"""The scripts of the streams: READ_BY_PRIORITY (a CPU worker's reads, workers/intake.py),
RECLAIM, DEAD_LETTER and TRIM_STREAM (workers/reclaim.py), STREAM_BACKLOG (the API's metrics).
One typed function each (shared/redis/scripts.py); what each does: shared/redis/lua/<name>.lua."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared import codecs, keys
from shared.redis import scripts
from shared.redis.scripts import ScriptCall


@dataclass(frozen=True)
class PriorityRead:
    reply: list[Any]  # as XREADGROUP's: [[stream key, [[id, [field, value, ...]]...]]...]
    taken: list[int]  # entries taken per stream, in the order of the keys


def _priority_read(reply: Any) -> PriorityRead:
    entries, taken = reply
    return PriorityRead(list(entries or []), [int(t) for t in taken])


def read_by_priority(
    *, stream_keys: Sequence[str], group: str, consumer: str, count: int, quotas: Sequence[int]
) -> ScriptCall[PriorityRead]:
    """Read new entries of several stages, each its 3 priority streams (high first) in
    `stream_keys`, `count` per stage shared by `quotas` (one per stream, in their order)."""
    args = [group, consumer, count, *quotas]
    return ScriptCall(scripts.READ_BY_PRIORITY, list(stream_keys), args, _priority_read)


@dataclass(frozen=True)
class Claimed:
    """An entry this consumer now holds, and how often it was delivered before this claim."""

    stream: str  # the stream's key
    entry_id: str
    deliveries: int
    fields: dict[str, str]


def parse_claim_reply(stream: str, reply: Sequence[Any]) -> tuple[str, list[Claimed], list[str]]:
    """RECLAIM's answer -> (next cursor, claimed entries, ids deleted from the stream)."""
    cursor = codecs.text(reply[0])
    claimed: list[Claimed] = []
    for raw_id, deliveries, flat in reply[1] or []:
        values = [codecs.text(v) for v in flat or []]
        fields = dict(zip(values[::2], values[1::2], strict=True))
        claimed.append(Claimed(stream, codecs.text(raw_id), int(deliveries), fields))
    deleted = [codecs.text(i) for i in (reply[2] if len(reply) > 2 else None) or []]
    return cursor, claimed, deleted


@dataclass(frozen=True)
class Reclaimed:
    cursor: str  # the next cursor ('0-0': the scan is done)
    claimed: list[Claimed]
    deleted: list[str]  # ids deleted from the stream while pending (acknowledged)


def reclaim(
    *,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    cursor: str,
    count: int = 1,
    ids: Sequence[str] = (),
) -> ScriptCall[Reclaimed]:
    """Claim, for `consumer`, the next entries idle `min_idle_ms` from `cursor` (at most
    `count`), or (cursor '') the `ids` still pending for this consumer."""
    return ScriptCall(
        scripts.RECLAIM,
        [stream],
        [group, consumer, min_idle_ms, cursor, count, *ids],
        lambda reply: Reclaimed(*parse_claim_reply(stream, reply)),
    )


def dead_letter(*, stream: str, group: str, entry_id: str, fields: Mapping[str, str]) -> ScriptCall[bool]:
    """Acknowledge an entry and copy `fields` to the dead-letter stream; False if someone
    acknowledged it already."""
    flat: list[str] = []
    for name, value in fields.items():
        flat += [name, value]
    return ScriptCall(
        scripts.DEAD_LETTER,
        [stream, keys.DEADLETTER],
        [group, entry_id, *flat],
        lambda reply: bool(int(reply)),
    )


@dataclass(frozen=True)
class Trimmed:
    floor: str  # the id trimmed below ('' when nothing was trimmed)
    removed: int


def trim_stream(*, stream: str) -> ScriptCall[Trimmed]:
    """Trim `stream` of the entries every consumer group is done with."""
    return ScriptCall(
        scripts.TRIM_STREAM, [stream], [], lambda reply: Trimmed(codecs.text(reply[0]), int(reply[1]))
    )


@dataclass(frozen=True)
class Backlog:
    lag: int  # entries not delivered yet
    pending: int  # delivered and not acknowledged
    oldest_pending: str  # the id of the oldest entry pending ('' none)
    oldest_waiting: str  # the id of the oldest entry not delivered yet ('' none)


def stream_backlog(*, streams: Sequence[tuple[str, str]], count_cap: int) -> ScriptCall[list[Backlog]]:
    """Per (stream key, the group that works it), its Backlog; lag counted up to `count_cap`
    where Redis does not know it."""
    return ScriptCall(
        scripts.STREAM_BACKLOG,
        [key for key, _ in streams],
        [count_cap, *(group for _, group in streams)],
        lambda reply: [
            Backlog(
                int(lag), int(pending), codecs.text(first_pending or b""), codecs.text(first_waiting or b"")
            )
            for lag, pending, first_pending, first_waiting in reply
        ],
    )
