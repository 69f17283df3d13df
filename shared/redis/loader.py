"""The one loader of Lua scripts (shared/redis/lua/<name>.lua): a script's text, ready to run.

Two rules, nothing else:

- `--! include <name>` (a line of its own) stands for the text of lua/<name>.lua, itself
  loaded by these rules; each fragment comes once per script, before the script's own body
  (fragments define Lua functions: give_bytes_back, reindex, job_ended, push_interrupted).
- `${NAME}` is replaced by the value CONSTANTS gives NAME: enum values from shared/messages.py
  (`${JobStatus.queued}`, `${EventType.completed}`), so that the Lua and the Python never spell
  a status or an event type differently, and a few limits defined in Python
  (`${JOB_EVENTS_MAXLEN}`). A name CONSTANTS lacks is an error at load, not at run.

Scripts are loaded once per process (lru_cache); the .lua files ship in the wheel
(pyproject package-data) and a test loads every one of them into a real redis-server.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from pathlib import Path

LUA_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r"^--! include ([a-z0-9_]+)[ \t]*$", re.M)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@lru_cache(maxsize=1)
def constants() -> dict[str, str]:
    """Every `${NAME}` a script may use, as Lua source text."""
    # Imported here: the modules that own these values may import the scripts themselves.
    from shared import job_index, metrics, webhooks  # noqa: PLC0415
    from shared.messages import EventType, ItemStatus, JobStatus, WebhookState  # noqa: PLC0415

    values: dict[str, str] = {}
    for enum in (JobStatus, ItemStatus, EventType, WebhookState):
        for member in enum:
            values[f"{enum.__name__}.{member.name}"] = member.value
    buckets = ", ".join(f"{{{b!r}, '{metrics.le_text(b)}'}}" for b in metrics.JOB_BUCKETS_S)
    values.update(
        JOB_EVENTS_MAXLEN=str(job_index.JOB_EVENTS_MAXLEN),
        JOB_BUCKETS="{" + buckets + "}",  # metrics.JOB_SECONDS's bounds: {{bound, its `le` text}...}
        WEBHOOK_ATTEMPTS_KEPT=str(webhooks.MAX_ATTEMPTS_KEPT),
        WEBHOOK_INTERRUPTED=json.dumps(webhooks.INTERRUPTED),  # a Lua (and JSON) string literal
        WEBHOOK_REDELIVER_EVENT=webhooks.REDELIVER_EVENT,
    )
    return values


def _raw(name: str) -> str:
    path = LUA_DIR / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script {name!r} ({path})")
    return path.read_text(encoding="utf-8")


def _expand(name: str, seen: set[str], chain: tuple[str, ...]) -> str:
    if name in chain:
        raise ValueError(f"Lua include cycle: {' -> '.join((*chain, name))}")
    text = _raw(name)
    fragments = []
    for included in _INCLUDE.findall(text):
        if included not in seen:
            seen.add(included)
            fragments.append(_expand(included, seen, (*chain, name)))
    return "".join(fragments) + _INCLUDE.sub("", text)


@cache
def source(name: str) -> str:
    """The text of script `name` (lua/<name>.lua): its fragments first, then its own body, with
    every `${NAME}` replaced; KeyError for a name CONSTANTS lacks."""
    values = constants()

    def put(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"{name}.lua: unknown placeholder ${{{match.group(1)}}}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(put, _expand(name, set(), ()))


def names() -> list[str]:
    """Every .lua file, fragments included (the tests load them all)."""
    return sorted(p.stem for p in LUA_DIR.glob("*.lua"))
