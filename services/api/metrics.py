"""GET /metrics: the whole stack's metrics, read from Redis at scrape, in Prometheus's format.

Workers push their counters to Redis (shared/metrics.py: keys.METRICS, and each model's
keys.model_stats); the API reads them, with the streams' backlogs (shared/redis/lua
STREAM_BACKLOG), the pipelines' admission counters (keys.backlog) and the live workers'
heartbeats, in a few pipelined round trips, into a Snapshot. `families(snapshot)` turns it
into prometheus_client metric families (a pure function), which a one-off registry renders
in the text format the scraper asked for (Prometheus text, or OpenMetrics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from services.api.routers.health import live_workers
from shared import codecs, keys, metrics
from shared.pipeline_spec import PipelinesConfig
from shared.redis import streams as stream_scripts

EVENTS_STREAM = "events"  # the label of keys.EVENTS
LAG_COUNT_CAP = 100_000  # most entries STREAM_BACKLOG counts per group on a Redis without `lag`
WORKER_KINDS = ("preprocess", "model", "notifier")
FINAL_STATUSES = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class StreamBacklog:
    waiting: int  # not delivered to a consumer yet (the group's lag)
    in_progress: int  # delivered, not acknowledged (the group's pending entries)
    oldest_ms: int | None = None  # when the oldest entry waiting or in progress was added (ms)


@dataclass
class Snapshot:
    """What one scrape read, before any formatting."""

    pipelines: list[str]
    streams: dict[str, StreamBacklog] = field(default_factory=dict)  # stream name -> backlog
    backlog: dict[str, int] = field(default_factory=dict)  # pipeline -> items accepted, not finished
    counters: metrics.Parsed = field(default_factory=lambda: metrics.parse({}))
    models: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> keys.model_stats fields
    workers: dict[str, int] = field(default_factory=dict)  # kind -> live workers
    waiting_requests: int = 0  # requests the scraped API process holds for their job's end


def _oldest_ms(*entry_ids: Any) -> int | None:
    """When the oldest of these stream ids was added (ms); '' or None: none."""
    times = [int(codecs.text(i).partition("-")[0]) for i in entry_ids if i not in (None, b"", "")]
    return min(times) if times else None


def watched_streams(config: PipelinesConfig) -> list[tuple[str, str, str]]:
    """(label, key, the consumer group dlpipe reads it with) of every stream of the stack."""
    work = config.work_streams()  # every stage's and model's, at every priority
    streams = [(name, keys.stream(name), keys.stream_group(keys.stream(name))) for name in work]
    return [*streams, (EVENTS_STREAM, keys.EVENTS, keys.NOTIFIER_GROUP)]


async def read_snapshot(client: Any, config: PipelinesConfig, worker_ttl_ms: int) -> Snapshot:
    """Everything /metrics shows, in one pipelined round trip plus the heartbeat reads."""
    streams = watched_streams(config)
    pipelines = sorted(config.pipelines)
    models = list(config.model_streams())
    backlog_call = stream_scripts.stream_backlog(
        streams=[(key, group) for _, key, group in streams], count_cap=LAG_COUNT_CAP
    )
    async with client.pipeline(transaction=False) as pipe:
        await backlog_call.queue_async(pipe)
        pipe.mget([keys.backlog(p) for p in pipelines])
        pipe.hgetall(keys.METRICS)
        for model in models:
            pipe.hgetall(keys.model_stats(model))
        stream_backlogs, backlogs, counters, *model_stats = await pipe.execute()
    workers = await live_workers(client, worker_ttl_ms)
    snapshot = Snapshot(pipelines=pipelines, counters=metrics.parse(counters))
    snapshot.streams = {
        label: StreamBacklog(b.lag, b.pending, _oldest_ms(b.oldest_pending, b.oldest_waiting))
        for (label, _, _), b in zip(streams, backlog_call.read(stream_backlogs), strict=True)
    }
    snapshot.backlog = {p: max(0, int(v or 0)) for p, v in zip(pipelines, backlogs, strict=True)}
    snapshot.models = {
        model: {codecs.text(k): float(v) for k, v in stats.items()}
        for model, stats in zip(models, model_stats, strict=True)
    }
    snapshot.workers = dict(Counter(codecs.text(w.get(b"kind", w.get("kind", "?"))) for w in workers))
    return snapshot


def _counter(family: metrics.Family, values: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    metric = CounterMetricFamily(family.name, family.help, labels=list(family.labels))
    for labels, value in sorted(values.items()):
        metric.add_metric(list(labels), value)
    return metric


def _histogram(
    family: metrics.Family, values: dict[tuple[str, ...], metrics.Histogram]
) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(family.name, family.help, labels=list(family.labels))
    for labels, histogram in sorted(values.items()):
        buckets = [(floatToGoString(le), n) for le, n in histogram.cumulative(family.buckets)]
        metric.add_metric(list(labels), buckets, histogram.sum)
    return metric


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """The metric families of a snapshot (docs/metrics.md has each)."""
    stream_backlog = GaugeMetricFamily(
        "dlpipe_stream_backlog_items",
        "Entries of a stream its workers have not finished: waiting (not read yet) or in_progress "
        "(read by a worker, not acknowledged). Streams: cpu.<pipeline>.<stage>, model.<model> (each "
        "also with :high and :low, a job priority's), events.",
        labels=["stream", "state"],
    )
    for label, backlog in sorted(snapshot.streams.items()):
        stream_backlog.add_metric([label, "waiting"], backlog.waiting)
        stream_backlog.add_metric([label, "in_progress"], backlog.in_progress)
    yield stream_backlog
    backlog = GaugeMetricFamily(
        "dlpipe_backlog_items",
        "Items a pipeline has accepted and not finished (what DLPIPE_MAX_BACKLOG caps).",
        labels=["pipeline"],
    )
    for pipeline, value in sorted(snapshot.backlog.items()):
        backlog.add_metric([pipeline], value)
    yield backlog
    for family in (metrics.ITEMS, metrics.JOBS):
        values = {(p, s): 0.0 for p in snapshot.pipelines for s in FINAL_STATUSES}  # known ones from 0
        values.update(snapshot.counters.counters[family])
        yield _counter(family, values)
    for family in (metrics.STAGE_SECONDS, metrics.QUEUE_WAIT, metrics.BATCH_SIZE, metrics.JOB_SECONDS):
        yield _histogram(family, snapshot.counters.histograms[family])
    busy = CounterMetricFamily(
        "dlpipe_model_busy_seconds",
        "Time a model spent in forward passes (collate, device copy, predict, split); "
        "rate() of it is the model's duty cycle.",
        labels=["model"],
    )
    failed = CounterMetricFamily(
        "dlpipe_model_failed_batches",
        "Forward passes that raised (every item of them failed).",
        labels=["model"],
    )
    for model, stats in sorted(snapshot.models.items()):
        busy.add_metric([model], stats.get("forward_ms", 0.0) / 1000)
        failed.add_metric([model], stats.get("failed_batches", 0.0))
    yield busy
    yield failed
    yield _counter(metrics.WEBHOOK_ATTEMPTS, snapshot.counters.counters[metrics.WEBHOOK_ATTEMPTS])
    workers = GaugeMetricFamily("dlpipe_workers", "Workers with a live heartbeat, by kind.", labels=["kind"])
    for kind in sorted(set(WORKER_KINDS) | set(snapshot.workers)):
        workers.add_metric([kind], snapshot.workers.get(kind, 0))
    yield workers
    yield GaugeMetricFamily(
        "dlpipe_api_waiting_requests",
        "Requests the API process that answered this scrape holds until their job ends (long polls, "
        "`Prefer: wait` submits).",
        value=snapshot.waiting_requests,
    )


class SnapshotCollector(Collector):
    """A prometheus_client collector over one scrape's snapshot (the reading is async, done before)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        return families(self.snapshot)


def render(snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format `accept` asks for."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
