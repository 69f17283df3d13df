"""An rq worker thread of the notifier outlives a Redis that is not there: it keeps making a
new rq worker after a growing delay instead of dying (a dead thread stops the notifier)."""

from __future__ import annotations

import logging
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.embedded_redis import free_port
from tests.support.waiting import wait_until
from workers.webhooks import rqthreads


def test_a_worker_thread_survives_redis_being_away(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens there; no retries inside redis-py, so each attempt fails at once.
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    stop = threading.Event()
    thread = threading.Thread(
        target=rqthreads.run_worker, args=(rqthreads.delivery_queue(client), "w", 0, stop)
    )
    with caplog.at_level(logging.WARNING, logger="workers.webhooks"):
        thread.start()
        try:
            retries = lambda: [r.getMessage() for r in caplog.records if "a new one in" in r.getMessage()]  # noqa: E731
            wait_until(lambda: len(retries()) >= 3, 60, "three retries")
            assert thread.is_alive()
            assert [m.rsplit(" ", 1)[-1] for m in retries()[:3]] == ["0.2s", "0.4s", "0.8s"]
        finally:
            stop.set()
            thread.join(30)
    assert not thread.is_alive()
    client.close()
