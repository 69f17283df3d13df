"""A Sentinel failover under load, on real processes (tests/failover.py): a primary, a replica and
three sentinels; `dlpipe up` on the sentinels with DLPIPE_REDIS_MIN_REPLICAS=1; 300 jobs; the
primary SIGKILLed mid-run. No job that got a 202 is lost, none is made twice, every process rides
it out (the stack serves again without a restart), and /readyz says what is going on meanwhile.
The same run without WAIT, and the timings, are bench/scripts/failover.py's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.e2e.conftest import start_stack, stop_stack
from tests.failover import run_failover, stack_env, start_topology

pytestmark = pytest.mark.e2e

log = logging.getLogger("tests.redis_failover")

JOBS = 300
KILL_AFTER = 100


def api_errors(log_text: str, last: int = 2) -> list[str]:
    """The API's last ERROR lines, each with the traceback logged under it."""
    found: list[list[str]] = []
    for line in log_text.splitlines():
        if " api[" in line and " ERROR " in line:
            found.append([line])
        elif found and line[:4] != found[-1][0][:4]:  # not a new log record (dated): the traceback
            found[-1].append(line)
    return ["\n".join(lines[:1] + lines[1:][-11:]) for lines in found[-last:]]


def test_no_accepted_job_is_lost_in_a_sentinel_failover_with_wait(tmp_path: Path) -> None:
    topo = start_topology(tmp_path / "redis")
    try:
        stack = start_stack(tmp_path, stack_env(topo, tmp_path, min_replicas=1))
        try:
            result = run_failover(stack.base_url, topo, JOBS, KILL_AFTER)
            assert stack.proc.poll() is None, "dlpipe up died"
            restarts = stack.log().count("; restarting in ")
            errors = api_errors(stack.log())
        finally:
            stop_stack(stack)
    finally:
        topo.stop()
    summary = result.line("min_replicas=1") + f" readyz={result.readyz_reasons[:6]} errors={errors}"
    log.warning("%s", summary)
    assert result.accepted == JOBS, summary
    assert result.lost == [] and result.duplicated == [] and result.unfinished == [], summary
    assert restarts == 0, f"a process of the stack was restarted: {summary}"
    assert set(result.refused) <= {"503", "ConnectError", "ReadTimeout", "RemoteProtocolError"}, summary
    # /readyz says so while it happens: the dead primary not answering, then (most runs: a 2 s probe
    # can span the second or so before the promotion) the sentinels naming no primary.
    assert any(r.startswith(("redis: failing over", "redis unreachable")) for r in result.readyz_reasons), (
        summary
    )
