"""The model worker's scheduling policy (workers/scheduling.py): pure, with numbers and a fake
clock. The cost curve's online fit, the pick (fuller batches, the age bound), when to decide
(fill while busy, never hold while idle), and the device clock's prediction."""

from __future__ import annotations

import pytest

from tests.support.clock import FakeClock
from workers.scheduling import CostCurve, DeviceClock, ModelQueue, Scheduler


def curve_of(a: float, b: float, sizes: tuple[int, ...] = (1, 2, 4, 8)) -> CostCurve:
    curve = CostCurve()
    for n in sizes:
        curve.add(n, a + b * n)
    return curve


# -- the cost curve ------------------------------------------------------------------------


def test_the_fit_recovers_a_and_b_from_the_passes_it_timed() -> None:
    curve = curve_of(40.0, 2.5, sizes=(1, 3, 8, 8, 5))
    a, b = curve.fit() or (0, 0)
    assert a == pytest.approx(40.0) and b == pytest.approx(2.5)
    assert curve.cost_ms(16) == pytest.approx(80.0)
    assert curve.efficiency(8) == pytest.approx(8 / 60.0)


def test_the_fit_follows_a_device_that_changes() -> None:
    curve = curve_of(40.0, 2.5)
    for _ in range(30):  # the device got twice as slow
        for n in (1, 2, 4, 8):
            curve.add(n, 2 * (40.0 + 2.5 * n))
    a, b = curve.fit() or (0, 0)
    assert a == pytest.approx(80.0, rel=0.01) and b == pytest.approx(5.0, rel=0.01)


def test_full_batches_alone_do_not_erase_the_fixed_cost_learnt_before() -> None:
    curve = curve_of(40.0, 2.5)
    for _ in range(500):
        curve.add(8, 60.0)  # a long run of full batches at the same cost
    a, _ = curve.fit() or (0, 0)
    assert a == pytest.approx(40.0, rel=0.05)


def test_one_batch_size_is_taken_as_proportional_and_nothing_is_negative() -> None:
    assert CostCurve().fit() is None and CostCurve().efficiency(4) is None
    only = CostCurve()
    only.add(4, 20.0)
    assert only.fit() == (0.0, 5.0)  # no evidence of a fixed cost yet
    falling = CostCurve()
    for n, ms in ((1, 30.0), (8, 20.0)):  # cheaper at 8 than at 1 (caches, noise)
        falling.add(n, ms)
    assert falling.fit() == (25.0, 0.0)
    steep = CostCurve()
    for n, ms in ((2, 1.0), (8, 10.0)):  # the line would cross zero: through the origin instead
        steep.add(n, ms)
    a, b = steep.fit() or (1, 1)
    assert a == 0.0 and b > 0
    with pytest.raises(ValueError):
        only.add(0, 1.0)


# -- the pick --------------------------------------------------------------------------------


def q(name: str, waiting: int, age_s: float = 0.0, max_batch: int = 8, arrived: int = 0) -> ModelQueue:
    return ModelQueue(name, waiting, age_s, max_batch, (arrived, 0))


def test_it_picks_the_fuller_batch_on_a_fixed_cost_curve() -> None:
    scheduler = Scheduler({"a": curve_of(50, 5), "b": curve_of(50, 5)}, max_age_s=1.0)
    # "a" has waited longer: the old policy (oldest first) would run its 3 now.
    pick = scheduler.pick([q("a", 3, age_s=0.2, arrived=1), q("b", 7, age_s=0.05, arrived=2)])
    assert pick is not None and pick.name == "b" and scheduler.take(pick) == 7
    full = scheduler.pick([q("a", 20, age_s=0.0), q("b", 7, age_s=0.3)])
    assert full is not None and full.name == "a" and scheduler.take(full) == 8  # never past max_batch


def test_it_compares_each_batch_with_its_own_models_full_batch() -> None:
    # "cheap" does more items per ms at any size, but its curve is flat: a batch of 2 wastes
    # nothing. "gpu" at 6 of 8 is 0.9 of its best; "flat" at 2 is 1.0 of its own.
    curves = {"gpu": curve_of(50, 5), "flat": curve_of(0, 10), "cheap": curve_of(60, 1)}
    scheduler = Scheduler(curves, max_age_s=1.0)
    assert scheduler.pick([q("gpu", 6), q("flat", 2)]).name == "flat"  # type: ignore[union-attr]
    assert scheduler.pick([q("gpu", 6), q("cheap", 3)]).name == "gpu"  # type: ignore[union-attr]


def test_the_age_bound_comes_first_oldest_first() -> None:
    scheduler = Scheduler({"a": curve_of(50, 5), "b": curve_of(50, 5), "c": curve_of(50, 5)}, max_age_s=0.5)
    pick = scheduler.pick([q("a", 8), q("b", 1, age_s=0.6), q("c", 2, age_s=0.9)])
    assert pick is not None and pick.name == "c"
    assert scheduler.pick([q("a", 8), q("b", 1, age_s=0.49)]).name == "a"  # type: ignore[union-attr]


def test_a_model_never_run_goes_first_and_ties_go_to_the_first_arrived() -> None:
    scheduler = Scheduler({"known": curve_of(50, 5), "new": CostCurve()}, max_age_s=1.0)
    assert scheduler.pick([q("known", 8), q("new", 1)]).name == "new"  # type: ignore[union-attr]
    tie = Scheduler({"x": curve_of(50, 5), "y": curve_of(50, 5)}, max_age_s=1.0)
    assert tie.pick([q("y", 4, arrived=20), q("x", 4, arrived=10)]).name == "x"  # type: ignore[union-attr]
    assert tie.pick([q("x", 0), q("y", 0)]) is None


# -- when to decide ------------------------------------------------------------------------


def test_batches_fill_while_the_device_is_busy_until_it_is_about_to_be_free() -> None:
    scheduler = Scheduler({"a": curve_of(50, 5)}, max_age_s=1.0)
    queues = [q("a", 3)]
    assert scheduler.fill_for_s(queues, busy_for_s=0.040, lead_s=0.004) == pytest.approx(0.036)
    assert scheduler.fill_for_s(queues, busy_for_s=0.004, lead_s=0.004) == 0.0
    assert scheduler.fill_for_s([], busy_for_s=0.040, lead_s=0.004) == pytest.approx(0.036)


def test_the_device_is_never_held_back_while_idle() -> None:
    scheduler = Scheduler({"a": curve_of(50, 5), "b": curve_of(50, 5)}, max_age_s=1.0)
    for waiting in (1, 3, 8):
        queues = [q("a", waiting), q("b", 0)]
        assert scheduler.fill_for_s(queues, busy_for_s=0.0, lead_s=0.002) == 0.0
        pick = scheduler.pick(queues)
        assert pick is not None and scheduler.take(pick) == waiting


def test_no_waiting_when_waiting_cannot_make_a_batch_better() -> None:
    curves = {"gpu": curve_of(50, 5), "flat": curve_of(0, 10), "new": CostCurve()}
    scheduler = Scheduler(curves, max_age_s=1.0)
    busy = {"busy_for_s": 0.1, "lead_s": 0.002}
    assert scheduler.fill_for_s([q("gpu", 8), q("flat", 1)], **busy) == 0.0  # full, and flat
    assert scheduler.fill_for_s([q("new", 1)], **busy) == 0.0  # no curve yet: as before
    assert scheduler.fill_for_s([q("gpu", 8), q("flat", 1), q("gpu", 2)], **busy) > 0


# -- the device clock ------------------------------------------------------------------------


def test_the_device_clock_predicts_the_running_and_committed_batches() -> None:
    clock = FakeClock()
    curves = {"a": curve_of(50, 5), "b": CostCurve()}
    device = DeviceClock(curves, clock)
    assert device.busy_for_s() == 0.0 and device.idle()
    device.commit("a", 4)
    assert device.busy_for_s() == pytest.approx(0.070)  # committed, not started: busy all the same
    device.begin("a", 4)
    device.commit("a", 8)
    clock.now += 0.030
    assert device.busy_for_s() == pytest.approx(0.040 + 0.090)
    clock.now += 0.100  # past its prediction: about to end (but not idle while it runs)
    assert device.busy_for_s() == pytest.approx(0.090) and not device.idle()
    device.end(0.130)
    assert curves["a"].samples == 5  # the pass taught its curve: the committed 8 cost more now
    assert device.busy_for_s() == pytest.approx((curves["a"].cost_ms(8) or 0) / 1000)
    assert device.busy_for_s() > 0.090
    device.begin("a", 8)
    device.end(None)  # a failed pass teaches nothing
    assert curves["a"].samples == 5 and device.busy_for_s() == 0.0 and device.idle()
    device.begin("b", 2)  # no curve yet: about to end
    assert device.busy_for_s() == 0.0 and not device.idle()
    device.commit("b", 3)
    device.reset()
    assert device.busy_for_s() == 0.0 and device.idle()
