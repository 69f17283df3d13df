"""The user's commands, built on the Python client (`import dlpipe`):

    dlpipe submit PIPELINE PATH... [--out F] [--concurrency N] ...   files and folders through a pipeline
    dlpipe jobs [--status S] [--pipeline P]                           this key's jobs, newest first
    dlpipe job ID [--watch]                                           one job (live with --watch)
    dlpipe cancel ID                                                  cancel a job

Each takes `--url` ($DLPIPE_URL, default http://127.0.0.1:8000) and `--api-key` ($DLPIPE_API_KEY).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

from services.cli_client import jobs, submit

COMMANDS = ("submit", "jobs", "job", "cancel")


def _connection_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url",
        default=os.environ.get("DLPIPE_URL") or "http://127.0.0.1:8000",
        help="the API (DLPIPE_URL; default http://127.0.0.1:8000)",
    )
    parent.add_argument(
        "--api-key", default=os.environ.get("DLPIPE_API_KEY") or None, help="API key (DLPIPE_API_KEY)"
    )
    return parent


def add_parsers(sub: Any, positive_int: Callable[[str], int]) -> None:
    flags = [_connection_flags()]
    p = sub.add_parser(
        "submit",
        parents=flags,
        help="send files and folders through a pipeline",
        description="Send every file of the PATHs through PIPELINE, --concurrency jobs at once, and write "
        "one JSON line per input (source, status, result or error) as each ends. With --out a rerun "
        "resumes: inputs already in the file are skipped, and a job sent before is not made again "
        "(each carries an Idempotency-Key from its files and flags). Exit 1 if any input failed.",
    )
    submit.add_arguments(p, positive_int)
    p_jobs = sub.add_parser("jobs", parents=flags, help="list jobs, newest first")
    jobs.add_jobs_arguments(p_jobs, positive_int)
    jobs.add_job_arguments(sub.add_parser("job", parents=flags, help="show one job (--watch: follow it)"))
    jobs.add_cancel_arguments(sub.add_parser("cancel", parents=flags, help="cancel a job"))


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    handlers = {"submit": submit.run, "jobs": jobs.run_jobs, "job": jobs.run_job, "cancel": jobs.run_cancel}
    return handlers[args.command](args)
