"""The model worker's intake: the entries it has read and not yet batched, per model, and how
the next batch is chosen from them (the Redis side of workers/scheduling.py's policy).

Two policies (DLPIPE_MODEL_SCHEDULER):

- `efficiency` (default). With the device idle: hold the oldest entry of every model stream,
  pick the model by the policy (Scheduler.pick: the age bound first, then the batch closest to
  its own model's full-batch efficiency), and fill its batch as before (collect_batch: up to
  max_batch_size, at most max_batch_delay_ms). With the device busy (a batch running or
  committed, DeviceClock): read every model stream up to max_batch_size into the held queues
  and, where this worker owns the device, keep reading until the device is about to be free
  (its predicted end less the lead: the time a batch takes to prepare, and a margin), unless
  waiting cannot make any batch better; then pick and take the batch from what is held. With
  nothing held it blocks for a first entry, as an idle worker does.
- `oldest`: the model whose oldest waiting entry arrived first, filled by collect_batch at once
  (what the worker did before the scheduler; kept to compare against).

Priorities (shared/priority.py): each model has one stream per priority (keys.stage_streams),
read together; what is held is kept per priority (up to max_batch_size each) and a batch takes
from them by the model's Share (high first, a guaranteed share for the lower ones). Across
models, a model holding higher-priority entries goes first (Scheduler.pick), within the age
bound; the oldest policy takes the model with the highest priority held, then the oldest.

Redis ends a BLOCK only at its event loop's next turn, 1/hz (100 ms at the default hz 10) away
on a quiet server, however short the BLOCK: waits that must end on time (a batch's delay, the
last stretch before the device is free) are polled, non-blocking reads and local sleeps; a
long wait starts with a BLOCK that stops one such tick early (a BLOCK ends at the first
arrival, so it never makes a batch later).

Entries read are pending to this consumer; the held ones join a batch in order, or are run by
`finish` at a warm shutdown, or are taken back by `recover` after a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from shared import keys
from shared.messages import now_ms
from shared.pipeline_spec import Batching
from shared.priority import DEFAULT as DEFAULT_PRIORITY
from shared.priority import ORDER, Priority, Share
from workers.batching import collect_batch
from workers.reclaim import Reclaimer, take_work
from workers.scheduling import DeviceClock, ModelQueue, Scheduler
from workers.store import Entry, Store

# Waits shorter than this are polled (non-blocking reads, local sleeps), never a Redis BLOCK:
# Redis ends a BLOCK on its next event loop turn, which on a quiet server is 1/hz (100 ms) away.
SHORT_BLOCK_MS = 200
POLL_S = 0.002  # between two polls
REDIS_TICK_S = 0.11  # how late a Redis BLOCK can end on a quiet server (hz 10), and a little more
BLOCK_AHEAD_S = 0.15  # a wait longer than this starts with a BLOCK of (wait - REDIS_TICK_S)
# Priorities are "in use" for this long after the worker last held a high or low entry: then a
# batch is decided as late as the device allows even when full (Scheduler.fill_for_s), so that
# a high item arriving meanwhile still joins it. A stack that never uses them decides as before.
PRIORITY_MEMORY_S = 60.0


def _entry_order(entry: Entry) -> tuple[int, int]:
    ms, _, seq = entry.entry_id.partition("-")
    return int(ms), int(seq or 0)


def _per_priority(entries: list[Entry]) -> list[int]:
    """How many of the entries are of each priority (in ORDER)."""
    counts = [0] * len(ORDER)
    for entry in entries:
        counts[entry.priority.rank] += 1
    return counts


def _best_rank(entries: list[Entry]) -> int:
    """The rank of the highest priority among the entries (0: high)."""
    return min((e.priority.rank for e in entries), default=len(ORDER))


class ModelQueues:
    def __init__(
        self,
        store: Store,
        consumer: str,
        streams: dict[str, str],
        batching: dict[str, Batching],
        reclaimer: Reclaimer,
        device: DeviceClock,
        scheduler: Scheduler | None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.consumer = consumer
        self.streams = streams  # model -> stream name
        self.batching = batching
        self.reclaimer = reclaimer
        self.device = device
        self.scheduler = scheduler  # None: the `oldest` policy
        self.clock = clock
        self.wall_ms = wall_ms
        self.sleep = sleep
        # model -> its streams, one per priority (high first); a stream key -> its model
        self.priority_streams = {name: keys.stage_streams(stream) for name, stream in streams.items()}
        self.model_of = {keys.stream(s): name for name, names in self.priority_streams.items() for s in names}
        self.held: dict[str, list[Entry]] = {name: [] for name in streams}  # read, not yet batched
        self.shares = {name: Share() for name in streams}
        self._prioritised_at: float | None = None  # when an entry not of normal priority was last held
        self._suspect: Entry | None = None  # the entry taken back that is held, if any

    # -- taken back ---------------------------------------------------------------------

    def take_suspect(self) -> int:
        """Hold one entry taken back (own unfinished, or idle under a dead worker): it joins
        the next batch of its model like a new one. One at a time, so a poison entry that
        kills this process is charged the deliveries, not a batch of others with it.
        Returns the entries given up."""
        held_ids = {e.entry_id for held in self.held.values() for e in held}
        if self._suspect is not None and self._suspect.entry_id in held_ids:
            return 0
        self._suspect = None
        suspects, handled = take_work(self.reclaimer, self.store)
        for entry in suspects:
            if entry.entry_id in held_ids:  # read by this worker already, not batched yet
                continue
            self.held[self.model_of[entry.stream]].insert(0, entry)
            self._suspect = entry
        return handled - len(suspects)

    def clear(self) -> None:
        for held in self.held.values():
            held.clear()
        self._suspect = None

    # -- the next batch -----------------------------------------------------------------

    def next_batch(self, block_ms: int, lead_s: float = 0.0) -> tuple[str, list[Entry]] | None:
        """The model to run next and a batch of its entries (None: nothing came in `block_ms`).
        `lead_s`: how long a batch takes to prepare once chosen (decide that much early)."""
        if self.scheduler is None:
            return self._oldest_first(block_ms)
        if self.device.idle():
            return self._while_idle(block_ms, self.scheduler)
        return self._while_busy(self.device.busy_for_s(), lead_s, self.scheduler, block_ms)

    def _oldest_first(self, block_ms: int) -> tuple[str, list[Entry]] | None:
        self._peek(block_ms)
        waiting = [name for name, held in self.held.items() if held]
        if not waiting:
            return None
        name = min(waiting, key=lambda n: (_best_rank(self.held[n]), _entry_order(self.held[n][0])))
        return name, self._collect(name)

    def _while_idle(self, block_ms: int, scheduler: Scheduler) -> tuple[str, list[Entry]] | None:
        self._peek(block_ms)
        pick = scheduler.pick(self.queues())
        if pick is None:
            return None
        return pick.name, self._collect(pick.name)

    def _while_busy(
        self, busy_for: float, lead_s: float, scheduler: Scheduler, block_ms: int
    ) -> tuple[str, list[Entry]] | None:
        self._fill()
        while True:
            queues = self.queues()
            if not queues:  # nothing held: wait for a first entry (a BLOCK ends at its arrival)
                self._fill(block_ms)
                if not any(self.held.values()):
                    return None
                busy_for = self.device.busy_for_s()
                continue
            wait_s = scheduler.fill_for_s(queues, busy_for, lead_s, self.overtakable())
            if wait_s <= 0:
                break
            # Far from the decision, a BLOCK (it ends at the next arrival, or up to a Redis tick
            # late); near it, polls, less often the farther it is.
            if wait_s > BLOCK_AHEAD_S:
                self._fill(round((wait_s - REDIS_TICK_S) * 1000))
            else:
                self.sleep(min(wait_s, max(POLL_S, wait_s / 4)))
                self._fill()
            busy_for = self.device.busy_for_s()
        pick = scheduler.pick(self.queues())
        if pick is None:
            return None
        return pick.name, self._take(pick.name, scheduler.take(pick))

    def queues(self) -> list[ModelQueue]:
        """What is held per model. Ages run from each entry's stream id (Redis's clock when it was
        added) to this machine's clock, as the queue-wait metric does; a clock behind Redis's
        counts as no wait."""
        now_ms = self.wall_ms()
        out = []
        for name, held in self.held.items():
            if held:
                arrived = _entry_order(min(held, key=_entry_order))
                age_s = max(0, now_ms - arrived[0]) / 1000.0
                out.append(
                    ModelQueue(
                        name,
                        len(held),
                        age_s,
                        self.batching[name].max_batch_size,
                        arrived,
                        rank=_best_rank(held),
                    )
                )
        return out

    # -- reading ------------------------------------------------------------------------

    def overtakable(self) -> bool:
        """Whether a high item arriving now should still get into the next batch: priorities are in
        use (PRIORITY_MEMORY_S) and something held is not high."""
        if self._prioritised_at is None or self.clock() - self._prioritised_at > PRIORITY_MEMORY_S:
            return False
        return any(e.priority is not Priority.high for held in self.held.values() for e in held)

    def _hold(self, entries: list[Entry]) -> None:
        for entry in entries:
            self.held[self.model_of[entry.stream]].append(entry)
            if entry.priority is not DEFAULT_PRIORITY:
                self._prioritised_at = self.clock()

    def _peek(self, block_ms: int) -> None:
        """Hold the oldest entry of every model stream that has one (one per stream, each priority)."""
        empty = [s for name, held in self.held.items() if not held for s in self.priority_streams[name]]
        if not empty:
            return
        block = None if any(self.held.values()) else block_ms
        self._hold(self.store.read(keys.MODEL_GROUP, self.consumer, empty, 1, block))

    def _fill(self, block_ms: int | None = None) -> None:
        """Read every model stream with room, up to its max_batch_size held per priority (block_ms
        None: no wait)."""
        room: dict[str, int] = {}  # stream name -> room
        for name, held in self.held.items():
            counts = _per_priority(held)
            for stream, n in zip(self.priority_streams[name], counts, strict=True):
                room[stream] = self.batching[name].max_batch_size - n
        streams = [s for s, free in room.items() if free > 0]
        if streams:
            count = max(room[s] for s in streams)
            self._hold(self.store.read(keys.MODEL_GROUP, self.consumer, streams, count, block_ms))

    def _collect(self, name: str) -> list[Entry]:
        batching = self.batching[name]
        return collect_batch(
            partial(self._read_for, name),
            self.clock,
            batching.max_batch_size,
            batching.max_batch_delay_ms,
            first_block_ms=1,
        )

    def _take(self, name: str, count: int) -> list[Entry]:
        """Up to `count` held entries of a model, shared among the priorities (its Share), high
        first; each priority's oldest first."""
        held = self.held[name]
        want = self.shares[name].split(count, _per_priority(held))
        taken: list[Entry] = []
        kept: list[Entry] = []
        for entry in held:
            rank = entry.priority.rank
            if want[rank] > 0:
                want[rank] -= 1
                taken.append(entry)
            else:
                kept.append(entry)
        held[:] = kept
        return sorted(taken, key=lambda e: e.priority.rank)

    def _read_for(self, name: str, count: int, block_ms: int) -> list[Entry]:
        """collect_batch's reader: what is held first, then the stream. A short wait is polled
        here rather than left to Redis: a BLOCK of a few ms ends only at the server's next event
        loop turn, up to 1/hz (100 ms at the default hz 10) on a quiet server."""
        if self.held[name]:
            return self._take(name, count)
        streams = self.priority_streams[name]
        if block_ms > SHORT_BLOCK_MS:
            self._hold(self.store.read(keys.MODEL_GROUP, self.consumer, streams, count, block_ms))
        else:
            self._hold(self.store.read(keys.MODEL_GROUP, self.consumer, streams, count, None))
            if not self.held[name]:
                self.sleep(min(block_ms / 1000.0, POLL_S))
        return self._take(name, count)  # what came, shared among the priorities; the rest held
