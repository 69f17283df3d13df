"""`dlpipe up`: the whole stack on one machine, as separate processes, supervised.

Without DLPIPE_REDIS_URL it starts an embedded redis-server (loopback only, AOF on, data in
`<data_dir>/redis-<api port>`); with it, it uses that Redis and starts none. Then it starts the
API and one of each worker as child processes, with the same command lines docker-compose.yml
runs (`dlpipe api`, `dlpipe worker preprocess`, ...), so `ps` shows what each one is.

A child that exits is logged with its exit code and restarted after a backoff (1 s doubling
to 30 s; reset once it has stayed up a while); so is the embedded Redis, on the same port and
data folder. On SIGINT/SIGTERM/SIGHUP every child gets SIGTERM
(warm shutdown) and up to a grace period to exit, then SIGKILL; the embedded Redis is stopped
last, once no child can still be writing to it. A second signal during shutdown kills at once.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor
(which then stops the children in order), and on Linux each child is sent SIGTERM if the
supervisor itself dies (PR_SET_PDEATHSIG): a killed `dlpipe up` leaves no orphans behind.

This module is `up()` and what it runs; shared/children.py starts, restarts and stops the
processes (Child, Supervisor), services/embedded.py starts the embedded Redis.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import redis

from services.embedded import REDIS_GRACE_S, EmbeddedRedis, lock_data_dir, start_embedded_redis
from shared import redis_conn
from shared.children import BACKOFF_BASE_S, DEFAULT_GRACE_S, MAX_FAILURES, Child, Supervisor
from shared.redis_checks import check_redis
from shared.redis_conn import redact_url
from shared.settings import Settings
from shared.webhook_secret import secret_env

log = logging.getLogger(__name__)

# The children `dlpipe up` runs, by name: `dlpipe <args>`. docker-compose.yml runs the same
# commands, one service each (tests/unit/test_deploy_files.py keeps the two in step).
CHILD_COMMANDS: dict[str, tuple[str, ...]] = {
    "api": ("api",),
    "preprocess": ("worker", "preprocess"),
    "model": ("worker", "model"),
    "notifier": ("worker", "notifier"),
}


def dlpipe_argv(args: Sequence[str]) -> list[str]:
    """The command line of `dlpipe <args>`: the console script beside this Python, else `-m services.cli`."""
    script = Path(sys.executable).parent / "dlpipe"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    return [sys.executable, "-m", "services.cli", *args]


def child_env(settings: Settings, redis_url: str | None) -> dict[str, str]:
    """The environment of a child: ours, with every setting as DLPIPE_* and the Redis to use
    (`redis_url`; None: the sentinels in the settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(settings.worker_env())
    if redis_url is not None:
        env["DLPIPE_REDIS_URL"] = redis_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check_redis_config(settings: Settings) -> None:
    """Warn loudly if the Redis in use can evict keys or keeps nothing on disk (shared/redis_checks.py).
    Best effort: a Redis not answering yet is checked by the API and each worker when it does."""
    where = redis_conn.describe(settings)
    client = redis_conn.sync_client(
        settings.model_copy(update={"redis_retries": 0}), socket_timeout=2, socket_connect_timeout=2
    )
    try:
        check_redis(client, log, f"at {where}")
    except redis.RedisError as exc:
        log.warning("Redis at %s does not answer yet (%s)", where, exc)
    finally:
        client.close()


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"dlpipe up: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def up(
    settings: Settings,
    commands: Mapping[str, Sequence[str]] | None = None,
    *,
    grace_s: float | None = None,
    stop_event: threading.Event | None = None,
    install_signal_handlers: bool = True,
    backoff_base_s: float = BACKOFF_BASE_S,
    max_failures: int = MAX_FAILURES,
) -> int:
    """Run the stack until SIGINT/SIGTERM (or `stop_event`): 0; or until a child (or the embedded
    Redis) is given up in a crash loop (shared/children.py): the rest stopped, 1.

    `commands` maps child names to full command lines (default: CHILD_COMMANDS as `dlpipe ...`);
    the tests pass stand-ins.
    """
    if commands is None:
        commands = {name: dlpipe_argv(args) for name, args in CHILD_COMMANDS.items()}
    if grace_s is None:
        grace_s = float(getattr(settings, "shutdown_grace_s", DEFAULT_GRACE_S))
    stop = stop_event or threading.Event()
    force = threading.Event()
    previous: dict[int, object] = {}

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: killing the children now", name)
            force.set()
        else:
            log.info("%s: stopping (children get up to %.0fs to finish their work)", name, grace_s)
            stop.set()

    if install_signal_handlers:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: a closed terminal must not stop the stack
            previous[signum] = signal.signal(signum, on_signal)

    sup_kwargs: dict[str, Any] = {"backoff_base_s": backoff_base_s, "max_failures": max_failures}
    embedded: EmbeddedRedis | None = None
    lock: IO[bytes] | None = None
    sup: Supervisor | None = None
    given_up: list[Child] = []
    try:
        _check_port_free(settings.host, settings.port)
        redis_url: str | None
        if settings.redis_sentinels:
            redis_url = None
            log.info("Redis: %s (DLPIPE_REDIS_SENTINELS; no embedded server)", redis_conn.describe(settings))
        elif settings.redis_url:
            redis_url = settings.redis_url
            log.info("Redis: %s (DLPIPE_REDIS_URL; no embedded server)", redact_url(redis_url))
        else:
            redis_dir = settings.data_dir / f"redis-{settings.port}"
            lock = lock_data_dir(redis_dir)
            embedded = start_embedded_redis(
                redis_dir, sup_kwargs, settings.redis_appendfsync, settings.redis_maxmemory
            )
            redis_url = embedded.url
            log.info(
                "Redis: %s (embedded redis-server pid=%d, AOF on, appendfsync %s, maxmemory %s "
                "noeviction, data and redis.log in %s)",
                redis_url,
                embedded.pid,
                settings.redis_appendfsync,
                settings.redis_maxmemory or "0",
                redis_dir.resolve(),
            )
        check_redis_config(
            settings if redis_url is None else settings.model_copy(update={"redis_url": redis_url})
        )
        env = child_env(settings, redis_url)
        env.update(secret_env(settings))  # webhooks are signed: a secret of its own when none is set
        sup = Supervisor([Child(name, list(argv), env) for name, argv in commands.items()], **sup_kwargs)
        sup.start()
        base = f"http://{_display_host(settings.host)}:{settings.port}"
        log.info("console: %s/ui/  API: %s  docs: %s/docs", base, base, base)
        while not stop.is_set():
            if embedded is not None:
                embedded.run_once()
            sup.run_once()
            given_up = sup.gave_up() + (embedded.sup.gave_up() if embedded is not None else [])
            if given_up:
                names = ", ".join(child.name for child in given_up)
                log.error("%s keeps crashing: stopping the stack (exit status 1)", names)
                break
            wait = sup.next_wakeup_s()
            if embedded is not None:
                wait = min(wait, embedded.sup.next_wakeup_s())
            stop.wait(wait)
    finally:
        if sup is not None:
            sup.stop(grace_s, force)  # children first: they may still write to Redis
        if embedded is not None:
            embedded.sup.stop(REDIS_GRACE_S, force)  # Redis last
        if lock is not None:
            lock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    log.info("stopped")
    return 1 if given_up else 0
