"""Taking back stream entries whose worker died, and giving up the ones that keep failing.

An entry read through a consumer group stays pending under its consumer until it is
acknowledged. If that worker is SIGKILLed or OOM-killed, nobody else would ever run it.
So every worker, once at start and then every `lease_ms / 2`, claims the entries of its
group idle for longer than `lease_ms` (XAUTOCLAIM) and runs them like new ones. After an
error in its own step it takes back its own unfinished entries the same way.

Each claim counts as a delivery (Redis keeps the count per pending entry). An entry
already delivered `max_deliveries` times is not run again: its item fails with the
reason and the entry is copied to the dead-letter stream, in one atomic step.

Suspect entries are claimed and run one at a time. A delivery is counted for every entry
a worker holds when it dies, not only for the one that killed it; one at a time, an
innocent entry that shared a batch with a poison one is charged one delivery more than
that, not one per crash. (Hence max_deliveries >= 2 in practice.)

Acknowledged entries stay in a stream until something trims it. Every `trim_interval_s`
(DLPIPE_STREAM_TRIM_INTERVAL_S; the first time one interval after start) the reclaimer
also trims each of its streams below the oldest entry some consumer group of that stream
still needs, pending or not yet read (TRIM_STREAM): the streams stay as long as
the work in flight, and no entry anyone still needs is ever dropped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from shared import codecs
from shared.redis import streams as stream_scripts
from shared.redis.streams import Claimed, parse_claim_reply  # noqa: F401  (parse_claim_reply: re-exported)
from workers.store import Entry, StageResult, Store

log = logging.getLogger(__name__)

MAX_CLAIMS_PER_STEP = 16  # claim calls one step may make looking for an entry to run
DEFAULT_TRIM_INTERVAL_S = 60.0  # Settings.stream_trim_interval_s
ADOPT_LIMIT = 10_000  # own pending entries taken back after an error, per stream


@dataclass
class Taken:
    """What one reclaim step found: entries to run (at most one) and entries to give up."""

    run: list[Claimed] = field(default_factory=list)
    give_up: list[Claimed] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.run) + len(self.give_up)


# -- pure decisions --------------------------------------------------------------------


def must_give_up(deliveries: int, max_deliveries: int) -> bool:
    """An entry delivered `max_deliveries` times already is not delivered again."""
    return deliveries >= max_deliveries


def give_up_reason(deliveries: int, where: str, subject: str = "item") -> str:
    return (
        f"given up after {deliveries} deliveries: the {subject} kept failing or killing its worker ({where})"
    )


def dead_letter_fields(claimed: Claimed, group: str, reason: str) -> dict[str, str]:
    """The dead-letter entry: the original fields, then where it came from and why."""
    return {
        **claimed.fields,
        "stream": claimed.stream,
        "entry_id": claimed.entry_id,
        "group": group,
        "deliveries": str(claimed.deliveries),
        "reason": reason,
    }


def split(claimed: list[Claimed], max_deliveries: int) -> Taken:
    taken = Taken()
    for c in claimed:
        (taken.give_up if must_give_up(c.deliveries, max_deliveries) else taken.run).append(c)
    return taken


class Schedule:
    """When the next scan for idle entries is due: at once, then every `interval_s` once a
    scan has found nothing more to claim."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._next = clock()  # the first scan: at start

    def due(self) -> bool:
        return self.clock() >= self._next

    def scanned(self) -> None:
        self._next = self.clock() + self.interval_s

    @classmethod
    def after_one_interval(cls, interval_s: float, clock: Callable[[], float]) -> Schedule:
        """A schedule whose first run is one interval from now, not at once."""
        schedule = cls(interval_s, clock)
        schedule.scanned()
        return schedule


# -- claiming --------------------------------------------------------------------------


class Reclaimer:
    """Claims suspect entries of one group on some streams for one consumer."""

    def __init__(
        self,
        client: redis.Redis,
        group: str,
        consumer: str,
        stream_keys: list[str],
        lease_ms: int,
        max_deliveries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        trim_interval_s: float = DEFAULT_TRIM_INTERVAL_S,
    ) -> None:
        self.redis = client
        self.group = group
        self.consumer = consumer
        self.stream_keys = list(stream_keys)
        self.lease_ms = lease_ms
        self.max_deliveries = max_deliveries
        self.schedule = Schedule(lease_ms / 2000, clock)
        self.trim_schedule = Schedule.after_one_interval(trim_interval_s, clock)
        self._scan: deque[tuple[str, str]] = deque()  # (stream, cursor) left in this scan
        self._own: deque[tuple[str, str]] = deque()  # own unfinished entries: (stream, id)

    def adopt_own(self) -> int:
        """After an error, with nothing in hand: queue this consumer's pending entries to be
        taken back (each one a delivery more). Returns how many."""
        self._own.clear()
        for stream in self.stream_keys:
            rows = self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=ADOPT_LIMIT, consumername=self.consumer
            )
            self._own.extend((stream, codecs.text(row["message_id"])) for row in rows)
        if self._own:
            log.info("consumer=%s taking back %d unfinished entries", self.consumer, len(self._own))
        return len(self._own)

    def take(self) -> Taken:
        """Claim until one entry is found to run (or nothing is left for now); entries past
        max_deliveries come back as give-ups, for the caller to fail."""
        if self.trim_schedule.due():
            self.trim()
        taken = Taken()
        may_start = True  # one scan's worth per call at most: an entry is claimed once per call
        for _ in range(MAX_CLAIMS_PER_STEP):
            if self._own:
                stream, entry_id = self._own.popleft()
                claimed = self._claim(stream, "", [entry_id])
            elif self._scan or (may_start and self.schedule.due()):
                if not self._scan:
                    self._scan.extend((stream, "0-0") for stream in self.stream_keys)
                may_start = False
                stream, cursor = self._scan.popleft()
                claimed = self._claim(stream, cursor, [])
                if not self._scan:
                    self.schedule.scanned()
            else:
                break
            found = split(claimed, self.max_deliveries)
            taken.run += found.run
            taken.give_up += found.give_up
            if taken.run:
                break
        for c in taken.run:
            log.warning(
                "job=%s stage=%s reclaimed entry %s of %s (delivery %d)",
                c.fields.get("job", "?"),
                c.fields.get("stage", self.group),
                c.entry_id,
                c.stream,
                c.deliveries + 1,
            )
        return taken

    def trim(self) -> int:
        """Trim each stream below the oldest entry any of its groups still needs (pending or not
        yet read); returns the entries removed."""
        removed = 0
        for stream in self.stream_keys:
            trimmed = stream_scripts.trim_stream(stream=stream).run(self.redis)
            if trimmed.removed:
                log.debug("trimmed %d entries of %s below %s", trimmed.removed, stream, trimmed.floor)
            removed += trimmed.removed
        self.trim_schedule.scanned()
        return removed

    def _claim(self, stream: str, cursor: str, ids: list[str]) -> list[Claimed]:
        found = stream_scripts.reclaim(
            stream=stream,
            group=self.group,
            consumer=self.consumer,
            min_idle_ms=self.lease_ms,
            cursor=cursor,
            count=1,
            ids=ids,
        ).run(self.redis)
        if cursor and found.cursor != "0-0":  # more of this stream to scan: next in line
            self._scan.appendleft((stream, found.cursor))
        for entry_id in found.deleted:
            log.info("entry %s of %s was deleted while pending; acknowledged", entry_id, stream)
        return found.claimed

    def dead_letter(self, claimed: Claimed, reason: str) -> bool:
        """Acknowledge an entry that has no item to fail, copying it to the dead-letter stream."""
        return stream_scripts.dead_letter(
            stream=claimed.stream,
            group=self.group,
            entry_id=claimed.entry_id,
            fields=dead_letter_fields(claimed, self.group, reason),
        ).run(self.redis)


# -- work items (preprocess and model workers) -----------------------------------------


def take_work(reclaimer: Reclaimer, store: Store) -> tuple[list[Entry], int]:
    """Claim suspect work items: fail (and dead-letter) the ones given up, in one round trip;
    return the entries to run (at most one) and how many entries were handled in all."""
    taken = reclaimer.take()
    group = reclaimer.group
    results: list[StageResult] = []
    for c in taken.give_up:
        entry = store.entry(group, c.stream, c.entry_id, c.fields)
        if entry is None:
            continue
        reason = give_up_reason(c.deliveries, f"stage {entry.item.stage!r}")
        log.error(
            "job=%s stage=%s index=%d %s; dead-lettered entry %s",
            entry.item.job_id,
            entry.item.stage,
            entry.item.index,
            reason,
            c.entry_id,
        )
        results.append(StageResult(entry, error=reason, dead_letter=dead_letter_fields(c, group, reason)))
    if results:
        store.complete(group, results)
    run = [e for c in taken.run if (e := store.entry(group, c.stream, c.entry_id, c.fields))]
    return run, len(taken)
