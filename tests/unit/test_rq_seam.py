"""The seam between ThreadWorker (workers/webhooks/rqthreads.py) and rq: it overrides methods of
rq's SimpleWorker, several of them private, and reads one private attribute. rq is pinned
(constraints.txt); an upgrade that renames, removes or re-signs any of them fails here, before a
notifier silently stops honouring a stop, throttling its heartbeats or naming its notifier."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import rq
from rq.worker import SimpleWorker

from workers.webhooks.rqthreads import ThreadWorker

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
CALLS = [  # how rq's work loop and job handling call them (rq/worker/base.py)
    "self._install_signal_handlers()",
    "self.check_for_suspension(burst)",
    "self.dequeue_job_and_maintain_ttl(timeout, max_idle_time)",
    "timeout = None if burst else self.dequeue_timeout",
    "self.heartbeat()",
    "self.subscribe()",
    "self.handle_exception(job, *exc_info)",
    "mapping=self.serialize()",
]


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


def test_rqs_loop_still_calls_them_and_keeps_the_stop_flag() -> None:
    source = inspect.getsource(inspect.getmodule(SimpleWorker.work))  # type: ignore[arg-type]
    missing = [call for call in CALLS if call not in source]
    assert missing == [], missing
    assert "self._stop_requested = True" in source and "if self._stop_requested:" in source
    assert hasattr(SimpleWorker, "death_penalty_class") and hasattr(SimpleWorker, "log_result_lifespan")
