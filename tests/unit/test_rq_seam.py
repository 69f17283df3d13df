"""The seam between ThreadWorker (workers/webhooks/rqthreads.py) and rq: it overrides methods of
rq's SimpleWorker, several of them private, and reads one private attribute. rq is pinned
(constraints.txt); an upgrade that renames, removes or re-signs any of them fails here, and so
does one whose loop no longer lets them work: a stop, a job run in a thread, the worker's hash
naming its notifier."""

from __future__ import annotations

import inspect
import re
import threading
from pathlib import Path

import fakeredis
import pytest
import rq
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.worker import SimpleWorker

from workers.webhooks.rqthreads import NOTIFIER_FIELD, ThreadWorker, delivery_queue

REPO = Path(__file__).resolve().parents[2]

# Each method ThreadWorker overrides, with rq's parameters, and where rq's own loop calls it so.
OVERRIDDEN = {
    "__init__": None,  # ThreadWorker passes *args/**kwargs on; it only adds keyword-only ones
    "serialize": ["self"],
    "heartbeat": ["self", "timeout", "pipeline"],
    "check_for_suspension": ["self", "burst"],
    "_install_signal_handlers": ["self"],
    "subscribe": ["self"],
    "unsubscribe": ["self"],
    "procline": ["self", "message"],
    "dequeue_job_and_maintain_ttl": ["self", "timeout", "max_idle_time"],
    "handle_exception": ["self", "job", "exc_info"],
}


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_rq_is_the_pinned_version() -> None:
    pinned = re.search(r"^rq==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned and rq.__version__ == pinned.group(1)


def test_every_override_still_overrides_a_method_of_the_same_shape() -> None:
    ours = {
        name
        for name, value in vars(ThreadWorker).items()
        if inspect.isfunction(value) and not name.startswith("__")
    }
    assert ours <= set(OVERRIDDEN), f"a new override: add it here, {sorted(ours - set(OVERRIDDEN))}"
    for name, expected in OVERRIDDEN.items():
        theirs = getattr(SimpleWorker, name, None)
        assert callable(theirs), f"rq's SimpleWorker has no {name} any more"
        if expected is not None:
            assert _params(theirs) == expected, name
    assert isinstance(inspect.getattr_static(SimpleWorker, "dequeue_timeout"), property)
    assert isinstance(inspect.getattr_static(ThreadWorker, "dequeue_timeout"), property)


def _worker(stop: threading.Event | None = None) -> tuple[ThreadWorker, fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    queue = delivery_queue(client)
    worker = ThreadWorker(
        [queue], name="t-1.0", connection=client, stop=stop or threading.Event(), notifier="n-1"
    )
    return worker, client


@pytest.mark.parametrize("how", ["the notifier's stop", "rq's own stop request"])
def test_a_stop_ends_the_wait_for_a_delivery(how: str) -> None:
    stop = threading.Event()
    worker, _ = _worker(stop)
    if how == "the notifier's stop":
        stop.set()
    else:
        worker._stop_requested = True  # what rq's request_stop sets
    with pytest.raises(StopRequested):
        worker.dequeue_job_and_maintain_ttl(1)


def test_it_runs_a_job_in_a_thread_and_its_hash_names_its_notifier() -> None:
    """Outside the main thread (where rq's signal handlers cannot be installed), in rq's own loop."""
    worker, client = _worker()
    job = worker.queues[0].enqueue("builtins.len", [1, 2, 3])
    worker.register_birth()
    assert client.hget(worker.key, NOTIFIER_FIELD) == b"n-1"
    worker.register_death()
    runner = threading.Thread(target=worker.work, kwargs={"burst": True, "logging_level": None})
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == 3
