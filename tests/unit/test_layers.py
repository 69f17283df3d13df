"""The layers (issue 13): shared/ imports neither services/ nor workers/; services/ (API, CLI,
supervisor) never imports workers/, but for the CLI's lazy entry points; workers/ never imports
services/; the model worker's entry point (model_main) is above the worker (model_worker), not in
a cycle with it. The contracts are in pyproject.toml ([tool.importlinter]); `lint-imports` checks them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    contracts = (REPO / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert contracts == 4 and f"{contracts} kept, 0 broken" in run.stdout, run.stdout
