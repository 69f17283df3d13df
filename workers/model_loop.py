"""The model worker's loop with its step's three parts overlapped, each in its own thread:

    feeder:   take_batch()  (Redis reads, decoding, collate)   -> ready (holds at most 1)
    main:     compute()     (device copy, predict, split)      -> done
    recorder: record()      (results and acks: one round trip)

so the device is handed the next batch the moment it finishes one. The feeder stays at most one
batch ahead (a second one waits in its hands), so the batches it fills are no older than that.

The main thread owns the model (CUDA streams, torch threads). A session runs the three threads
until `stop` is set or one of them fails. At `stop` (warm shutdown) the feeder stops taking
work, and every batch taken is still computed and recorded before the session returns. A
failure (say Redis went away) halts all three; batches in hand stay pending in their streams,
and runtime.run_loop waits, recovers (takes back this consumer's pending entries) and starts a
new session, as it does for plain steps.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Protocol

from workers import runtime
from workers.inference import ForwardPass, Prepared

HAND_OVER_S = 0.05  # how often a thread waiting on a queue looks at the stop and halt events


@dataclass(frozen=True)
class Computed:
    """A batch after its forward pass (run None: nothing in it could run)."""

    prepared: Prepared
    run: ForwardPass | None


class Steps(Protocol):
    consumer: str

    def take_batch(self, block_ms: int | None = None) -> tuple[int, Prepared | None]: ...
    def compute(self, prepared: Prepared) -> Computed: ...
    def record(self, computed: Computed) -> None: ...
    def recover(self) -> None: ...
    def log_stats(self, force: bool = False) -> None: ...


def run_overlapped(worker: Steps, stop: threading.Event) -> None:
    """Sessions until `stop`, through runtime.run_loop (errors logged, waited out, recovered)."""
    runtime.run_loop(
        f"model {worker.consumer}", lambda: run_session(worker, stop), stop, recover=worker.recover
    )


def run_session(worker: Steps, stop: threading.Event) -> None:
    """Run the three parts until `stop` (everything taken is recorded) or a failure (raised)."""
    ready: queue.Queue[Prepared] = queue.Queue(maxsize=1)
    done: queue.Queue[Computed | None] = queue.Queue()
    halt = threading.Event()  # a part failed: everyone stops now
    fed = threading.Event()  # the feeder has stopped taking work
    errors: list[BaseException] = []

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        halt.set()

    def feed() -> None:
        try:
            while not stop.is_set() and not halt.is_set():
                _, prepared = worker.take_batch()
                while prepared is not None and not halt.is_set():
                    try:
                        ready.put(prepared, timeout=HAND_OVER_S)
                        prepared = None
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the session, raised there
            fail(exc)
        finally:
            fed.set()

    def record() -> None:
        try:
            while (computed := done.get()) is not None:
                if not halt.is_set():
                    worker.record(computed)
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    threads = [
        threading.Thread(target=feed, name="model-feeder", daemon=True),
        threading.Thread(target=record, name="model-recorder", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        while not halt.is_set():
            try:
                prepared = ready.get(timeout=HAND_OVER_S)
            except queue.Empty:
                if fed.is_set() and ready.empty():
                    break  # stopping, and every batch taken has been computed
                continue
            done.put(worker.compute(prepared))
            worker.log_stats()
    except BaseException as exc:  # noqa: BLE001
        fail(exc)
    finally:
        done.put(None)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
