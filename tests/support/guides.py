"""The docs' files run as written: every fenced block that names a file becomes that file."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

CUSTOM_MODELS = REPO / "docs" / "custom-models.md"
# A block whose first line names a file: `# my_models/colors.py`, or `# first-job.sh: what it does`.
FENCE = re.compile(
    r"```(?:python|yaml|sh)\n(?P<head># (?P<path>[\w./-]+)(?::[^\n]*)?\n)(?P<body>.*?)```", re.S
)


def write_guide_files(root: Path, guide: Path = CUSTOM_MODELS) -> dict[str, Path]:
    """Every fenced block whose first line names a file (`# my_models/colors.py`, or
    `# first-job.sh: what it does`) becomes that file: for the custom-models guide and for the README."""
    written = {}
    for match in FENCE.finditer(guide.read_text()):
        path = root / match["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(match["head"] + match["body"])
        written[match["path"]] = path
    return written
