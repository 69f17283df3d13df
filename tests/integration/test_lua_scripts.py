"""Every Lua script of the Redis layer (shared/redis/lua) loads into a real redis-server (the
bundled 6.2 and the machine's 7.x), documents its KEYS at its top, and ships in the wheel."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

import pytest

from shared.redis import loader, scripts

REPO = Path(__file__).resolve().parents[2]
FRAGMENTS = {"give_bytes_back", "reindex", "job_ended", "webhook_push_interrupted"}


def test_every_script_loads(any_redis: Any) -> None:
    for name in loader.names():
        sha = any_redis.script_load(loader.source(name))
        assert any_redis.script_exists(sha) == [True], name


def test_every_script_text_is_a_loaded_file_and_each_file_is_used() -> None:
    texts = {v for k, v in vars(scripts).items() if k.isupper() and isinstance(v, str)}
    sources = {name: loader.source(name) for name in loader.names()}
    assert texts <= set(sources.values())
    unused = {name for name, text in sources.items() if text not in texts} - FRAGMENTS
    assert not unused, f"scripts no module names: {sorted(unused)}"


def test_every_script_documents_its_keys_and_no_placeholder_is_left() -> None:
    for name in loader.names():
        raw = (loader.LUA_DIR / f"{name}.lua").read_text()
        header = raw.split("\n\n", 1)[0]
        assert header.startswith("--"), f"{name}.lua: no comment at its top"
        if name not in FRAGMENTS and ("KEYS[" in raw or "ARGV[" in raw):
            assert "KEYS" in header, f"{name}.lua: its KEYS are not documented at its top"
        assert "${" not in loader.source(name), name


def test_an_unknown_placeholder_is_an_error_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.lua").write_text("-- KEYS: none\n\nreturn '${NoSuch.thing}'\n")
    monkeypatch.setattr(loader, "LUA_DIR", tmp_path)
    with pytest.raises(KeyError, match="NoSuch.thing"):
        loader.source.__wrapped__("bad")


def test_the_scripts_ship_in_the_wheel() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in loader.LUA_DIR.glob("*.lua"):
        rel = path.relative_to(REPO / "shared").as_posix()
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in data["shared"]), rel


def test_a_script_is_registered_once_per_client(redis_client: Any) -> None:
    first = scripts.registered(redis_client, scripts.TRIM_STREAM)
    assert scripts.registered(redis_client, scripts.TRIM_STREAM) is first
    assert first(keys=["no-such-stream"]) == [b"", 0]
