"""Job priorities without Redis: the Share (high first, a guaranteed share for the lower ones,
work-conserving), the pick across models, and the stream names of every priority."""

from __future__ import annotations

import pytest

from shared import keys
from shared.pipeline_spec import PipelineConfigError, parse_pipelines
from shared.priority import ORDER, Priority, Share, fill, parse
from tests import stagefns
from workers.scheduling import CostCurve, ModelQueue, Scheduler

HIGH, NORMAL, LOW = range(3)


def run(share: Share, count: int, available: list[int], steps: int) -> list[int]:
    """Slots each priority got over `steps` batches while `available` wait (never running out)."""
    total = [0, 0, 0]
    for _ in range(steps):
        got = share.split(count, available)
        assert sum(got) == min(count, sum(available))
        total = [t + g for t, g in zip(total, got, strict=True)]
    return total


@pytest.mark.parametrize("count", [1, 3, 8, 12, 32])
def test_with_every_priority_backlogged_the_slots_go_8_3_1(count: int) -> None:
    total = run(Share(), count, [10**6] * 3, steps=120)
    slots = 120 * count
    assert total[HIGH] == pytest.approx(slots * 8 / 12, abs=count + 1)
    assert total[NORMAL] == pytest.approx(slots * 3 / 12, abs=count + 1)
    assert total[LOW] == pytest.approx(slots / 12, abs=count + 1)


@pytest.mark.parametrize("count", [1, 8])
def test_low_is_never_starved_by_a_high_flood(count: int) -> None:
    share = Share()
    gaps, since = [], 0
    for _ in range(200):
        got = share.split(count, [10**6, 0, 10**6])
        since = 0 if got[LOW] else since + 1
        gaps.append(since)
    assert max(gaps) < 12  # at least one low slot every 12 slots' worth of batches
    total = run(share, count, [10**6, 0, 10**6], steps=120)
    assert total[LOW] >= 120 * count / 12 - 1  # its share; normal's unused share went to high
    assert total[HIGH] + total[LOW] == 120 * count


def test_a_lone_priority_gets_every_slot_and_a_high_arrival_goes_first() -> None:
    share = Share()
    for _ in range(50):
        assert share.split(8, [0, 0, 100]) == [0, 0, 8]  # low alone: all of it
    got = share.split(8, [1, 0, 100])  # one high item arrives: it is in the very next batch
    assert got[HIGH] == 1 and sum(got) == 8
    # Low's credit did not go deep below zero while it was alone: it keeps its share at once.
    got = share.split(8, [100, 0, 100])
    assert got[LOW] >= 1


def test_an_empty_priority_banks_no_credit() -> None:
    share = Share()
    for _ in range(100):
        share.split(8, [0, 100, 100])  # high empty for long
    got = share.split(8, [100, 100, 100])
    assert got[HIGH] <= 6  # no burst from 100 batches of unused share


def test_fill_takes_quotas_then_the_rest_high_first() -> None:
    assert fill([5, 2, 1], [0, 10, 10], 8) == [0, 7, 1]
    assert fill([5, 2, 1], [3, 0, 10], 8) == [3, 0, 5]
    assert fill([5, 2, 1], [1, 1, 1], 8) == [1, 1, 1]


def test_plan_hands_out_exactly_count_slots() -> None:
    share = Share()
    for count in (0, 1, 5, 8, 64):
        assert sum(share.plan(count)) == count
    with pytest.raises(ValueError):
        Share((8, 0, 1))


def test_priority_names_and_stored_values() -> None:
    assert [p.value for p in ORDER] == ["high", "normal", "low"]
    assert [p.rank for p in ORDER] == [0, 1, 2]
    assert parse(b"high") is Priority.high and parse(None) is Priority.normal
    assert parse("urgent") is Priority.normal  # an unknown stored value reads as normal


def test_every_priority_has_its_stream_and_normal_keeps_the_plain_name() -> None:
    assert keys.stage_streams("cpu.p.pre") == ["cpu.p.pre:high", "cpu.p.pre", "cpu.p.pre:low"]
    for name in keys.stage_streams("model.m"):
        assert keys.base_stream_name(name) == "model.m"
        assert keys.base_stream_name(keys.stream(name)) == keys.stream("model.m")
        assert keys.stream_group(keys.stream(name)) == keys.MODEL_GROUP
    assert keys.stream_priority(keys.stream("cpu.p.pre:low")) is Priority.low
    assert keys.stream_priority(keys.stream("cpu.p.high")) is Priority.normal  # a stage named `high`
    config = parse_pipelines(stagefns.pipelines())
    assert len(config.work_streams()) == 3 * (len(config.cpu_streams()) + len(config.model_streams()))


def test_a_model_name_cannot_hold_a_priority_suffix() -> None:
    doc = stagefns.pipelines()
    model = next(iter(doc["models"]))
    doc["models"][f"{model}:high"] = doc["models"].pop(model)
    with pytest.raises(PipelineConfigError, match="no ':'"):
        parse_pipelines(doc)


def test_the_scheduler_prefers_a_model_holding_higher_priorities_within_the_age_bound() -> None:
    curves = {"a": CostCurve(), "b": CostCurve()}
    for curve in curves.values():
        for n in (1, 8):
            curve.add(n, 40.0 + n)  # a fixed cost: full batches are the efficient ones
    scheduler = Scheduler(curves, max_age_s=0.5)
    full_low = ModelQueue("a", 8, 0.1, 8, (1, 0), rank=2)
    one_high = ModelQueue("b", 1, 0.01, 8, (2, 0), rank=0)
    assert scheduler.pick([full_low, one_high]).name == "b"  # type: ignore[union-attr]
    # Equal priorities: efficiency decides, as before.
    assert scheduler.pick([full_low, ModelQueue("b", 1, 0.01, 8, (2, 0), rank=2)]).name == "a"  # type: ignore[union-attr]
    # The age bound still comes first: a low queue that waited too long goes.
    overdue_low = ModelQueue("a", 2, 0.6, 8, (1, 0), rank=2)
    assert scheduler.pick([overdue_low, one_high]).name == "a"  # type: ignore[union-attr]


def test_full_batches_wait_for_the_device_only_while_a_high_item_could_overtake_them() -> None:
    curve = CostCurve()
    for n in (1, 8):
        curve.add(n, 40.0 + n)
    scheduler = Scheduler({"a": curve}, max_age_s=0.5)
    full = [ModelQueue("a", 8, 0.01, 8, (1, 0), rank=2)]
    busy = {"busy_for_s": 0.040, "lead_s": 0.004}
    assert scheduler.fill_for_s(full, **busy) == 0.0  # nothing to gain: decided at once, as before
    assert scheduler.fill_for_s(full, **busy, overtakable=True) == pytest.approx(0.036)
    replicas = Scheduler({"a": curve}, max_age_s=0.5, fill_while_busy=False)
    assert replicas.fill_for_s(full, **busy, overtakable=True) == 0.0  # CPU replicas never hold back
