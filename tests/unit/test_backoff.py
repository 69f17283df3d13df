"""shared/backoff.py: the one formula for the waits between retries."""

from __future__ import annotations

import pytest

from shared.backoff import Backoff, exponential_s, jittered
from shared.children import restart_delay


def test_the_wait_doubles_from_the_base_up_to_the_cap() -> None:
    assert [exponential_s(a, 0.5, 3.0) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exponential_s(10_000, 1.0, 30.0) == 30.0  # no overflow however many attempts
    assert exponential_s(-1, 1.0, 30.0) == 1.0


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_jitter_spreads_a_wait_over_its_upper_half(draw: float) -> None:
    assert jittered(4.0, lambda: draw) == pytest.approx(4.0 * (0.5 + draw / 2))
    assert 2.0 <= jittered(4.0) <= 4.0


def test_a_loops_waits_restart_from_the_beginning_with_a_new_sequence() -> None:
    backoff = Backoff(initial_s=0.2, max_s=1.0)
    waits = backoff.delays()
    assert [waits() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delays()() == 0.2


def test_the_supervisors_restarts_use_it() -> None:
    assert [restart_delay(f, 1.0, 30.0) for f in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
