"""Scripts in a worker's pipeline on a real redis-server: EVALSHA with no SCRIPT EXISTS round trip,
and each call run exactly once even when Redis has lost its script cache (as after a restart)."""

from __future__ import annotations

import redis

from workers.scripted_pipeline import ScriptedPipeline

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_scripts_run_once_each_also_after_the_script_cache_is_lost(redis_client: redis.Redis) -> None:
    script = redis_client.register_script(INCR_BY)
    redis_client.script_flush()
    redis_client.config_resetstat()
    script_calls_before = _script_command_calls(redis_client)  # 0 (CONFIG RESETSTAT)
    pipe = ScriptedPipeline(redis_client)
    pipe.script(script, ["n"], [2])
    pipe.pipe.incrby("n", 10)
    pipe.script(script, ["n"], [5])
    replies = pipe.execute()
    # The plain command ran first; each script call ran exactly once (sent again as EVAL).
    assert replies == [12, 10, 17]
    assert int(redis_client.get("n")) == 17
    pipe = ScriptedPipeline(redis_client)  # cached again: plain EVALSHA
    pipe.script(script, ["n"], [1])
    assert pipe.execute() == [18]
    assert _script_command_calls(redis_client) == script_calls_before  # no SCRIPT EXISTS (nor LOAD)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_eval"]["calls"] == 2 and stats["cmdstat_evalsha"]["calls"] == 3


def _script_command_calls(client: redis.Redis) -> int:
    """SCRIPT subcommands run so far (Redis 6.2 counts them as `script`, 7.x per subcommand)."""
    stats = client.info("commandstats")
    return sum(
        v["calls"] for k, v in stats.items() if k == "cmdstat_script" or k.startswith("cmdstat_script|")
    )


def test_an_error_in_the_pipeline_is_raised_after_every_command_ran(redis_client: redis.Redis) -> None:
    script = redis_client.register_script(INCR_BY)
    redis_client.set("text", "not a number")
    pipe = ScriptedPipeline(redis_client)
    pipe.script(script, ["text"], [1])
    pipe.pipe.incrby("n", 1)
    try:
        pipe.execute()
    except redis.ResponseError as exc:
        assert "not an integer" in str(exc)
    else:
        raise AssertionError("the script's error was not raised")
    assert int(redis_client.get("n")) == 1
