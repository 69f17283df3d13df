"""stdlib logging for every dlpipe process: one line per record, with the process's role."""

from __future__ import annotations

import logging


def setup_logging(level: str, role: str) -> None:
    """Configure the root logger. Log job ids and stages in messages as `job=<id> stage=<name>`."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {role}[%(process)d] %(name)s: %(message)s",
        force=True,
    )
