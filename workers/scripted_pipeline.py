"""A redis-py pipeline that runs Lua scripts without redis-py's extra round trip.

redis-py asks Redis `SCRIPT EXISTS` before every execute() of a pipeline that holds scripts
(Script objects called with `client=pipe`): one round trip more on every batch a worker reads
or records. Here scripts go as plain EVALSHA, and only the calls that come back NOSCRIPT (Redis
restarted and lost its script cache) are sent once more as EVAL, which also caches them again.
A NOSCRIPT call did not run, so each script call still runs exactly once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from shared import redis_conn
from shared.redis.scripts import ScriptCall, registered
from shared.redis_full import is_out_of_memory

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)


class ScriptedPipeline:
    """`pipe` is a non-transactional pipeline for any other command; `call()` adds a script's
    typed call (shared/redis: its reply comes back from execute() read), `script()` a raw one."""

    def __init__(self, client: redis.Redis, wait: Settings | None = None) -> None:
        """`wait`: WAIT for its DLPIPE_REDIS_MIN_REPLICAS after the commands (shared/redis_conn.py);
        `replicated` then says what the WAIT after the scripts' last run found."""
        self._client = client
        self._wait = wait
        self.pipe = client.pipeline(transaction=False)
        self.replicated = redis_conn.wait_after(self.pipe, wait) if wait is not None else None
        self._scripts: dict[int, tuple[Script, list[Any], list[Any]]] = {}  # position -> call
        self._readers: dict[int, Any] = {}  # position -> its ScriptCall's `read`

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        self._scripts[len(self.pipe)] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    def call(self, call: ScriptCall[Any]) -> None:
        """Add a typed script call (registered once per client); execute() gives its reply read."""
        self._readers[len(self.pipe)] = call.read
        self.script(registered(self._client, call.text), call.keys, call.args)

    def __len__(self) -> int:
        return len(self.pipe)

    def execute(self, counts_from: int | None = None) -> list[Any]:
        """Every reply in order; raises the first error after all commands ran (as redis-py does).
        Commands from position `counts_from` on only count things (metrics): Redis refusing them
        for memory (shared/redis_full.py) costs those counts, logged, not the worker its step."""
        if not len(self.pipe):
            return []
        replies = self.pipe.execute(raise_on_error=False)
        unknown = [at for at in self._scripts if isinstance(replies[at], NoScriptError)]
        if unknown:
            again = self._client.pipeline(transaction=False)
            if self._wait is not None:  # the scripts' writes are in this one
                self.replicated = redis_conn.wait_after(again, self._wait)
            for at in unknown:
                script, keys, args = self._scripts[at]
                again.eval(script.script, len(keys), *keys, *args)
            for at, reply in zip(unknown, again.execute(raise_on_error=False), strict=True):
                replies[at] = reply
        for at, reply in enumerate(replies):
            if not isinstance(reply, Exception):
                continue
            if counts_from is not None and at >= counts_from and is_out_of_memory(reply):
                log.warning("redis is at its maxmemory: %d counter updates dropped", len(replies) - at)
                replies[at:] = [None] * (len(replies) - at)
                break
            raise reply
        for at, read in self._readers.items():
            if counts_from is None or at < counts_from:  # past it: maybe a count dropped for memory
                replies[at] = read(replies[at])
        return replies
