"""Metric families dlpipe keeps in Redis, and how their counters are written and read back.

Workers push, the API serves (GET /metrics, services/api/metrics.py). Every counter lives in
one Redis hash, keys.METRICS, one field per (family, label values[, bucket]):

    <family>|<label value>|<label value>...            a counter
    <family>|<label value>...|<le>                     a histogram bucket: observations with
                                                       le(previous bucket) < value <= le
    <family>|<label value>...|+Inf                     observations above the last bucket
    <family>|<label value>...|sum                      a histogram's sum

Buckets are stored per bucket (not cumulative): one HINCRBY per observation, the reader
adds them up into Prometheus's cumulative `_bucket`s and `_count`, so `_count` is always
the `+Inf` bucket. Label values are pipeline, stage and model names (the pipelines file),
statuses and outcomes: bounded, never job ids. Pipeline and stage names cannot hold `|`
(shared/pipeline_spec.py); a model name may, as it is always the only label.

Workers aggregate what they observe in a Tally and hand `take()` to the write they make
anyway (Store.complete's `counters`): no round trip of its own. Items and jobs by final
status are counted in the Lua scripts that make them final (shared/redis/lua), webhook
attempts in the one that records them (shared/webhooks.py FINISH), with the same fields.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared import codecs, keys

SEP = "|"
INF = "+Inf"
SUM = "sum"

# Seconds: a stage function (ms for a resize, seconds for a slow fetch or a big batch share)
STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds in a stream before a worker starts on the entry (a backlog can hold minutes)
WAIT_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Seconds from a job's submission to its end (a one-image job: tens of ms; a big one: minutes)
JOB_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


@dataclass(frozen=True)
class Family:
    """One metric family: its field prefix in keys.METRICS, its Prometheus name and labels."""

    id: str  # the field prefix
    name: str  # the Prometheus name (counters without `_total`: the exposition adds it)
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # set: a histogram

    @property
    def is_histogram(self) -> bool:
        return bool(self.buckets)


ITEMS = Family(
    "items", "dlpipe_items", "Items that reached a final status.", ("pipeline", "status")
)  # counted by COMPLETE_STAGE and CANCEL_JOB
JOBS = Family("jobs", "dlpipe_jobs", "Jobs that reached a final status.", ("pipeline", "status"))
STAGE_SECONDS = Family(
    "stage_s",
    "dlpipe_stage_seconds",
    "Time one item spends in a stage: the stage function, or for a model stage the item's share "
    "of its batch's forward pass (the batch's time / its items).",
    ("pipeline", "stage"),
    STAGE_BUCKETS_S,
)
QUEUE_WAIT = Family(
    "wait_s",
    "dlpipe_queue_wait_seconds",
    "Time from an entry's arrival in a stage's stream to a worker starting on it (for a model "
    "stage: its batch starting, batch filling included).",
    ("pipeline", "stage"),
    WAIT_BUCKETS_S,
)
BATCH_SIZE = Family(
    "batch", "dlpipe_model_batch_size", "Items per forward pass of a model.", ("model",), BATCH_BUCKETS
)
WEBHOOK_ATTEMPTS = Family(
    "webhook",
    "dlpipe_webhook_attempts",
    "Webhook delivery attempts, by what followed: succeeded, failed (a retry is due) or dead "
    "(given up); status_class is the answer's (2xx..5xx) or none (no answer: timeout, refused, "
    "not sent).",
    ("event", "outcome", "status_class"),
)
JOB_SECONDS = Family(
    "job_s",
    "dlpipe_job_seconds",
    "Time from a job's submission to its end (succeeded or failed; canceled jobs are not counted), "
    "observed by the script that ends it.",
    ("pipeline",),
    JOB_BUCKETS_S,
)
FAMILIES = (ITEMS, JOBS, STAGE_SECONDS, QUEUE_WAIT, BATCH_SIZE, WEBHOOK_ATTEMPTS, JOB_SECONDS)
_BY_ID = {f.id: f for f in FAMILIES}


def le_text(bound: float) -> str:
    """A bucket's upper bound as stored: `0.0025`, `1`, `+Inf`."""
    return INF if math.isinf(bound) else format(bound, "g")


def field_name(family: Family, labels: Iterable[str], suffix: str | None = None) -> str:
    parts = [family.id, *labels]
    if suffix is not None:
        parts.append(suffix)
    return SEP.join(parts)


def bucket_field(family: Family, labels: tuple[str, ...], value: float) -> str:
    """The field of the bucket `value` falls in (the first bound >= value, else +Inf)."""
    i = bisect.bisect_left(family.buckets, value)
    return field_name(family, labels, le_text(family.buckets[i]) if i < len(family.buckets) else INF)


def webhook_field(event: str, outcome: str, status_code: int | None) -> str:
    """The WEBHOOK_ATTEMPTS field of one attempt (FINISH adds 1 to it)."""
    status_class = "none" if status_code is None else f"{status_code // 100}xx"
    return field_name(WEBHOOK_ATTEMPTS, (event, outcome, status_class))


@dataclass
class Tally:
    """Increments observed by one worker and not yet written: `take()` them into a write the
    worker makes anyway (keys.METRICS -> field -> amount; ints HINCRBY, floats HINCRBYFLOAT)."""

    fields: dict[str, int | float] = field(default_factory=dict)

    def add(self, family: Family, labels: tuple[str, ...], n: int = 1) -> None:
        name = field_name(family, labels)
        self.fields[name] = self.fields.get(name, 0) + n

    def observe(self, family: Family, labels: tuple[str, ...], value: float, n: int = 1) -> None:
        """`n` observations of `value` (n > 1: the items of one batch, which share a time)."""
        bucket = bucket_field(family, labels, value)
        self.fields[bucket] = self.fields.get(bucket, 0) + n
        total = field_name(family, labels, SUM)
        self.fields[total] = self.fields.get(total, 0.0) + float(value) * n

    def take(self) -> dict[str, dict[str, int | float]]:
        """What to add to Redis, as Store.complete's `counters`; empties the tally."""
        if not self.fields:
            return {}
        taken, self.fields = self.fields, {}
        return {keys.METRICS: taken}


# -- reading back (the API) -----------------------------------------------------------


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> observations in it
    sum: float = 0.0

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[float, float]]:
        """Prometheus's cumulative buckets (upper bound, observations at or below it) over
        `bounds` and any other bound stored (an older writer's), then +Inf: the count."""
        every = sorted(set(bounds) | set(self.buckets) | {math.inf})
        running, out = 0.0, []
        for bound in every:
            running += self.buckets.get(bound, 0.0)
            out.append((bound, running))
        return out


@dataclass
class Parsed:
    counters: dict[Family, dict[tuple[str, ...], float]]
    histograms: dict[Family, dict[tuple[str, ...], Histogram]]


def parse(fields: Mapping[Any, Any]) -> Parsed:
    """keys.METRICS as HGETALL returns it -> counters and histograms per family and labels.
    Fields of no known family, or malformed, are skipped (a newer or older writer's)."""
    out = Parsed({f: {} for f in FAMILIES if not f.is_histogram}, {f: {} for f in FAMILIES if f.is_histogram})
    for raw_name, raw_value in fields.items():
        name = codecs.text(raw_name)
        family = _BY_ID.get(name.partition(SEP)[0])
        try:
            value = float(codecs.text(raw_value))
        except ValueError:
            continue
        if family is None or not math.isfinite(value):
            continue
        rest = name[len(family.id) + 1 :]
        if not family.is_histogram:
            labels = tuple(rest.split(SEP, len(family.labels) - 1))
            if len(labels) == len(family.labels):
                out.counters[family][labels] = out.counters[family].get(labels, 0.0) + value
            continue
        label_text, _, suffix = rest.rpartition(SEP)
        labels = tuple(label_text.split(SEP, len(family.labels) - 1))
        if len(labels) != len(family.labels):
            continue
        bound = _bound(suffix)
        if bound is None and suffix != SUM:
            continue
        histogram = out.histograms[family].setdefault(labels, Histogram())
        if bound is None:
            histogram.sum += value
        else:
            histogram.buckets[bound] = histogram.buckets.get(bound, 0.0) + value
    return out


def _bound(suffix: str) -> float | None:
    """A bucket field's upper bound ("+Inf" is inf); None if it is not one."""
    try:
        bound = float(suffix)
    except ValueError:
        return None
    return None if math.isnan(bound) else bound
