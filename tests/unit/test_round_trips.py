"""Round trips the workers make per item, counted against fakeredis: the notifier's per-event
lookups and acks come once per batch; a later stage's load does not mark its job running again."""

from __future__ import annotations

from typing import Any

import pytest

from shared import keys
from shared.redis import scripts
from tests.stagefns import queue_job
from tests.support.worker_steps import SETTINGS, cpu_worker, make_store
from workers import scripted_pipeline
from workers.notifier import Notifier


class Counting:
    """The client, counting pipelines made and XACK calls."""

    def __init__(self, client: Any) -> None:
        self._client, self.pipelines, self.xacks = client, 0, 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return self._client.pipeline(*args, **kwargs)

    def xack(self, *args: Any) -> Any:
        self.xacks += 1
        return self._client.xack(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_the_notifier_looks_up_and_acks_a_batch_of_events_in_one_round_trip_each(client: Any) -> None:
    store = make_store(client)
    for i in range(10):  # jobs without webhooks: their events are only dropped
        queue_job(client, store.config.pipelines["sums"], f"n{i}", [{"v": i}])
        client.xadd(keys.EVENTS, {"job": f"n{i}", "type": "job.completed", "at": "1"})
    counting = Counting(client)
    notifier = Notifier(counting, SETTINGS, "n-1", lambda *_: True)  # type: ignore[arg-type]
    notifier.recover()
    counting.pipelines = counting.xacks = 0
    assert notifier.run_once() == 10
    assert (counting.pipelines, counting.xacks) == (1, 1)  # was 10 and 10: one of each per event
    assert client.xpending(keys.EVENTS, keys.NOTIFIER_GROUP)["pending"] == 0


def test_a_later_stage_does_not_mark_its_job_running_again(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "r1", [{"v": 1}, {"v": 2}])
    started: list[str] = []
    script = scripted_pipeline.ScriptedPipeline.script

    def spy(self: Any, which: Any, keys_: list[Any], args: list[Any]) -> None:
        if which is scripts.registered(client, scripts.START_JOB):
            started.append(str(keys_[0]))
        script(self, which, keys_, args)

    monkeypatch.setattr(scripted_pipeline.ScriptedPipeline, "script", spy)
    cpu_worker(store).run_once()  # `prep`, the items' first stage: the job starts
    assert started == [keys.job("r1")]
    assert client.hget(keys.job("r1"), "status") == b"running"
    store.ensure_groups(["model.summer"], keys.MODEL_GROUP)
    entries = store.read(keys.MODEL_GROUP, "gpu-1", ["model.summer"], 8, None)
    assert len(entries) == 2 and all(values is not None for values in store.load(entries))
    assert started == [keys.job("r1")]  # the model stage's load: no START_JOB (it was 1 per job)
