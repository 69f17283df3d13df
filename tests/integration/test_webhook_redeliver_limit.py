"""The redelivery limit with every part real: `dlpipe api` and a notifier as processes on a
real redis-server, and a receiver on 127.0.0.1 that answers 410 Gone (each round it gets is
dead at once, so without a limit every redeliver call could be one more POST to it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

from shared.embedded_redis import free_port
from tests.support.hooks import Hook, finish_job, rq_idle, settings_for, start_hook, wait_state
from tests.support.procs import Procs
from tests.support.waiting import wait_until

INTERVAL_S = 60  # longer than the test: only the first call may redeliver


def test_fifty_concurrent_redeliveries_against_a_receiver_answering_410_make_one_more_post(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs, hooks: list[Hook]
) -> None:
    hook = start_hook(hooks, (410, {}))
    settings = settings_for(redis_url, tmp_path, port=free_port(), webhook_redeliver_interval_s=INTERVAL_S)
    procs.start(settings, "workers.notifier")
    procs.start(settings, "services.cli", "api")
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as api:
        wait_until(lambda: api.get("/healthz").status_code == 200, 60, f"the API to answer\n{procs.logs()}")
        finish_job(redis_client, settings, "g1", hook.url)
        wait_state(api, "g1", "dead", 30, f"the 410\n{procs.logs()}")  # type: ignore[arg-type]
        assert len(hook.posts) == 1
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: api.post("/v1/jobs/g1/webhook/redeliver"), range(50)))
        assert sorted(a.status_code for a in answers) == [202] + [429] * 49, [a.text for a in answers]
        waits = {int(a.headers["retry-after"]) for a in answers if a.status_code == 429}
        assert waits and all(1 <= w <= INTERVAL_S for w in waits), waits
        wait_until(lambda: len(hook.posts) == 2, 30, f"the one redelivery\n{procs.logs()}")
        shown = wait_state(api, "g1", "dead", 30, "the redelivery's 410")  # type: ignore[arg-type]
        assert [a["status_code"] for a in shown["attempts"]] == [410, 410]
        wait_until(lambda: rq_idle(redis_client), 10, "rq to have nothing left")
        again = api.post("/v1/jobs/g1/webhook/redeliver")  # dead again, and still too soon
        assert again.status_code == 429 and "REDELIVER_INTERVAL_S" in again.json()["detail"]
    assert len(hook.posts) == 2
