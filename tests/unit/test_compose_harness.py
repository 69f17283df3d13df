"""The Compose run test skips, saying why, where the environment cannot run it (tests/deploy/dockerd.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.dockerd import Dockerd, Unavailable


def test_not_root_is_a_reason_to_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Unavailable, match="not root"):
        Dockerd(data_root=tmp_path / "docker", run_dir=tmp_path / "run").start()


def test_a_missing_engine_is_a_reason_to_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Unavailable, match="not installed: dockerd, docker, docker-compose"):
        Dockerd(data_root=tmp_path / "docker", run_dir=tmp_path / "run").start()


def test_a_daemon_that_exits_is_a_reason_to_skip_with_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in {
        "dockerd": "echo 'failed to start daemon: no cgroups' >&2; exit 1",
        "docker": "exit 1",
        "docker-compose": "exit 0",
    }.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (tmp_path / "run").mkdir()
    with pytest.raises(Unavailable, match="dockerd exited .*no cgroups"):
        Dockerd(data_root=tmp_path / "docker", run_dir=tmp_path / "run").start()
