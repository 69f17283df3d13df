"""Rates over the last minutes for `GET /v1/status`, from counters that only grow.

The workers' counters are cumulative (keys.model_stats per model; keys.METRICS: jobs by final
status, job latency histograms, shared/metrics.py), so a rate over a window is the change between
two samples. Each API process samples them every SAMPLE_S (one pipelined round trip, no write on
the workers' path) and keeps KEEP_S of samples in memory: per model items/s, mean batch and duty
cycle over the last minute; per pipeline jobs/s and p50/p95 latency over the last 5 minutes. A
process that started less than a window ago answers over what it has seen (`null` before its
second sample).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from shared import keys, metrics
from shared.pipeline_spec import PipelinesConfig

log = logging.getLogger(__name__)

SAMPLE_S = 5.0
MODEL_WINDOW_S = 60.0
PIPELINE_WINDOW_S = 300.0
KEEP_S = PIPELINE_WINDOW_S + 2 * SAMPLE_S
FINAL = ("succeeded", "failed", "canceled")


class CounterSeries:
    """Timed samples of some counters (name -> value); their change over a window."""

    def __init__(self, keep_s: float = KEEP_S) -> None:
        self.keep_s = keep_s
        self.samples: deque[tuple[float, dict[str, float]]] = deque()

    def observe(self, at_s: float, values: dict[str, float]) -> None:
        self.samples.append((at_s, values))
        while len(self.samples) > 2 and at_s - self.samples[1][0] >= self.keep_s:
            self.samples.popleft()

    def change(self, window_s: float) -> tuple[float, dict[str, float]] | None:
        """(seconds spanned, each counter's growth) from the oldest sample within `window_s` of the
        newest; None with fewer than two samples. A counter that went back (reset) counts from 0."""
        if len(self.samples) < 2:
            return None
        end_s, end = self.samples[-1]
        start_s, start = next((t, v) for t, v in self.samples if end_s - t <= window_s + SAMPLE_S / 2)
        if end_s <= start_s:
            return None
        grown = {k: v - start.get(k, 0.0) if v >= start.get(k, 0.0) else v for k, v in end.items()}
        return end_s - start_s, grown


def quantile_ms(histogram: metrics.Histogram, q: float) -> float | None:
    """The q-quantile (ms) of a histogram of seconds, interpolated in its bucket; None if empty."""
    cumulative = histogram.cumulative(metrics.JOB_BUCKETS_S)
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return None
    target, lower, below = q * total, 0.0, 0.0
    for bound, count in cumulative:
        if count >= target:
            if bound == float("inf"):
                return lower * 1000
            inside = count - below
            share = (target - below) / inside if inside else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, count
    return lower * 1000


class StatusSampler:
    def __init__(
        self, client: Any, config: PipelinesConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.clock = clock
        self.pipelines = sorted(config.pipelines)
        self.models = list(config.model_streams())
        bounds = [*(metrics.le_text(b) for b in metrics.JOB_BUCKETS_S), metrics.INF, metrics.SUM]
        self.fields = [
            *(metrics.field_name(metrics.JOBS, (p, s)) for p in self.pipelines for s in FINAL),
            *(metrics.field_name(metrics.JOB_SECONDS, (p,), b) for p in self.pipelines for b in bounds),
        ]
        self.series = CounterSeries()

    async def sample_once(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.METRICS, self.fields)
            for model in self.models:
                pipe.hgetall(keys.model_stats(model))
            counters, *stats = await pipe.execute()
        values = {f: float(v) for f, v in zip(self.fields, counters, strict=True) if v is not None}
        for model, fields in zip(self.models, stats, strict=True):
            for name, v in fields.items():
                values[f"model|{model}|{name.decode() if isinstance(name, bytes) else name}"] = float(v)
        self.series.observe(self.clock(), values)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample_once()
            except (RedisError, OSError) as exc:
                log.debug("status sampler: redis unavailable (%s)", exc)
            except Exception:
                log.exception("status sampler failed")
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
            except TimeoutError:
                pass

    def model_rates(self) -> dict[str, dict[str, float | None]]:
        """Per model: items_per_s, mean_batch, duty_cycle (busy share of the time; summed over
        its replicas, so above 1 with several) over the last minute."""
        change = self.series.change(MODEL_WINDOW_S)
        out: dict[str, dict[str, float | None]] = {}
        for model in self.models:
            if change is None:
                out[model] = {"items_per_s": None, "mean_batch": None, "duty_cycle": None}
                continue
            span, grown = change
            items, batches = grown.get(f"model|{model}|items", 0.0), grown.get(f"model|{model}|batches", 0.0)
            out[model] = {
                "items_per_s": items / span,
                "mean_batch": items / batches if batches else None,
                "duty_cycle": grown.get(f"model|{model}|forward_ms", 0.0) / 1000 / span,
            }
        return out

    def pipeline_rates(self) -> dict[str, dict[str, float | None]]:
        """Per pipeline: jobs_per_s (ended, any status), p50_ms and p95_ms (latency of the jobs that
        succeeded or failed) over the last 5 minutes."""
        change = self.series.change(PIPELINE_WINDOW_S)
        out: dict[str, dict[str, float | None]] = {}
        for p in self.pipelines:
            if change is None:
                out[p] = {"jobs_per_s": None, "p50_ms": None, "p95_ms": None}
                continue
            span, grown = change
            ended = sum(grown.get(metrics.field_name(metrics.JOBS, (p, s)), 0.0) for s in FINAL)
            prefix = metrics.field_name(metrics.JOB_SECONDS, (p,)) + metrics.SEP
            histogram = metrics.parse({k: v for k, v in grown.items() if k.startswith(prefix)})
            latency = histogram.histograms[metrics.JOB_SECONDS].get((p,), metrics.Histogram())
            out[p] = {
                "jobs_per_s": ended / span,
                "p50_ms": quantile_ms(latency, 0.5),
                "p95_ms": quantile_ms(latency, 0.95),
            }
        return out
