"""The model worker's overlapped loop (workers/model_loop.py) with a fake worker: no Redis, no
torch model. Batches are numbers; what matters is what is computed and recorded, in which order,
on which thread, and what happens at a stop and at a failure."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.support.waiting import wait_until
from workers.inference import ForwardPass, Prepared
from workers.model_loop import Computed, run_session


class FakeWorker:
    consumer = "fake"

    def __init__(
        self, batches: int, fail_take_at: int | None = None, fail_record_at: int | None = None
    ) -> None:
        self.left = list(range(batches))
        self.fail_take_at = fail_take_at
        self.fail_record_at = fail_record_at
        self.taken: list[int] = []
        self.computed: list[tuple[int, str]] = []  # (batch, thread name)
        self.recorded: list[int] = []
        self.in_compute = threading.Event()
        self.release_compute = threading.Event()
        self.release_compute.set()
        self.on_take: Callable[[int], None] = lambda n: None

    def take_batch(self, block_ms: int | None = None) -> tuple[int, Prepared | None]:
        if not self.left:
            threading.Event().wait(0.001)  # an idle read: Redis would block here
            return 0, None
        number = self.left.pop(0)
        if number == self.fail_take_at:
            raise ConnectionError("redis went away in take_batch")
        self.taken.append(number)
        self.on_take(number)
        return 1, Prepared(name=str(number), entries=[])

    def compute(self, prepared: Prepared) -> Computed:
        self.in_compute.set()
        self.release_compute.wait(10)
        self.computed.append((int(prepared.name), threading.current_thread().name))
        return Computed(prepared, ForwardPass([], 0.0, failed=False))

    def record(self, computed: Computed) -> None:
        number = int(computed.prepared.name)
        if number == self.fail_record_at:
            raise ConnectionError("redis went away in record")
        self.recorded.append(number)

    def recover(self) -> None:
        pass

    def log_stats(self, force: bool = False) -> None:
        pass


def _run(worker: FakeWorker, stop: threading.Event) -> threading.Thread:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_session(worker, stop)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=target, name="main")
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_every_batch_is_computed_on_the_calling_thread_and_recorded_in_order() -> None:
    worker, stop = FakeWorker(batches=20), threading.Event()
    session = _run(worker, stop)
    wait_until(lambda: len(worker.recorded) == 20, timeout_s=10, what="every batch recorded")
    stop.set()
    session.join(10)
    assert not session.is_alive() and not session.errors  # type: ignore[attr-defined]
    assert worker.recorded == list(range(20))
    assert [n for n, _ in worker.computed] == list(range(20))
    assert {thread for _, thread in worker.computed} == {"main"}


def test_the_next_batch_is_taken_while_one_computes_but_no_more_than_one_ahead() -> None:
    worker, stop = FakeWorker(batches=10), threading.Event()
    worker.release_compute.clear()  # batch 0 computes until released
    session = _run(worker, stop)
    wait_until(worker.in_compute.is_set, timeout_s=10, what="batch 0 computing")
    # Batch 1 waits ready, batch 2 waits in the feeder's hands; nothing more is taken.
    wait_until(lambda: worker.taken == [0, 1, 2], timeout_s=10, what="two batches taken ahead")
    assert worker.recorded == []
    worker.release_compute.set()
    wait_until(lambda: len(worker.recorded) == 10, timeout_s=10, what="every batch recorded")
    stop.set()
    session.join(10)
    assert worker.recorded == list(range(10))


def test_a_stop_finishes_every_batch_taken_and_takes_no_more() -> None:
    worker, stop = FakeWorker(batches=50), threading.Event()
    worker.on_take = lambda n: stop.set() if n == 3 else None  # the stop comes while batch 3 is taken
    session = _run(worker, stop)
    session.join(10)
    assert not session.is_alive() and not session.errors  # type: ignore[attr-defined]
    assert worker.taken == [0, 1, 2, 3]
    assert worker.recorded == worker.taken  # nothing taken is left unrecorded


@pytest.mark.parametrize("where", ["take", "record"])
def test_a_failure_in_a_thread_halts_the_session_and_is_raised(where: str) -> None:
    worker = FakeWorker(batches=50, **{f"fail_{where}_at": 5})  # type: ignore[arg-type]
    stop = threading.Event()
    session = _run(worker, stop)
    session.join(10)
    assert not session.is_alive()
    assert [type(e) for e in session.errors] == [ConnectionError]  # type: ignore[attr-defined]
    assert where in str(session.errors[0])  # type: ignore[attr-defined]
    assert not stop.is_set()  # run_loop will recover and start a new session
    assert 5 not in worker.recorded and len(worker.taken) < 50  # halted, not run to the end
    assert worker.recorded == sorted(worker.recorded)
