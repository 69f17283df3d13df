"""`dlpipe jobs`, `dlpipe job ID [--watch]`, `dlpipe cancel ID`: built on dlpipe.Client."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from dlpipe import APIError, Client, ConflictError, JobStatus, JobView, NotFoundError, TransportError


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, api_key=args.api_key)


def _print_job(view: JobView) -> None:
    print(view.model_dump_json(indent=2))


def add_jobs_arguments(parser: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    parser.add_argument("--status", choices=[s.value for s in JobStatus], help="only jobs with this status")
    parser.add_argument("--pipeline", help="only jobs of this pipeline")
    parser.add_argument("--limit", type=positive_int, default=50, help="at most this many jobs (default 50)")
    parser.add_argument("--json", action="store_true", help="one JSON object per job instead of a table")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="follow the job live until it ends (its event stream; long polls on an API without one); "
        "exit 1 unless it succeeded",
    )


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID")


def _errors(command: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except (APIError, TransportError) as exc:
        print(f"dlpipe {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run_jobs(args: argparse.Namespace) -> int:
    def body() -> int:
        with _client(args) as client:
            summaries = client.jobs(status=args.status, pipeline=args.pipeline, limit=args.limit)
            if args.json:
                for s in summaries:
                    print(s.model_dump_json())
                return 0
            print(f"{'ID':32}  {'PIPELINE':20}  {'STATUS':9}  {'DONE':>11}  CREATED")
            for s in summaries:
                done = f"{s.progress.done}/{s.progress.total}"
                created = s.created_at.isoformat(timespec="seconds")
                print(f"{s.id:32}  {s.pipeline:20}  {s.status.value:9}  {done:>11}  {created}")
        return 0

    return _errors("jobs", body)


def _watch(client: Client, view: JobView) -> JobView:
    """Lines on stderr as the job moves; the final job. The event stream, else long polls."""
    if view.status.is_final:
        return view
    try:
        for event in client.events(view.id):
            if event.type == "progress":
                print(f"progress {event.data.done}/{event.data.total}", file=sys.stderr, flush=True)
            elif event.type == "output":
                out = event.data
                where = f" {out.source}" if out.source else ""
                reason = f": {out.error}" if out.error else ""
                print(f"output {out.index}{where}: {out.status.value}{reason}", file=sys.stderr, flush=True)
            elif event.type == "completed":
                final: JobView = event.data
                done = f"{final.progress.done}/{final.progress.total}"
                print(f"completed {final.status.value} {done}", file=sys.stderr, flush=True)
                return final
    except NotFoundError:
        client.job(view.id)  # still there (else this raises): an API without the event stream
    last = None
    while True:
        view = client.job(view.id, wait_s=2)  # a line every 2 s at most, as it moves
        if (view.progress.done, view.progress.total) != last:
            last = (view.progress.done, view.progress.total)
            print(f"progress {last[0]}/{last[1]}", file=sys.stderr, flush=True)
        if view.status.is_final:
            print(f"completed {view.status.value} {last[0]}/{last[1]}", file=sys.stderr, flush=True)
            return view


def run_job(args: argparse.Namespace) -> int:
    def body() -> int:
        with _client(args) as client:
            view = client.job(args.job_id)
            if not args.watch:
                _print_job(view)
                return 0
            view = _watch(client, view)
            _print_job(view)
            return 0 if view.status is JobStatus.succeeded else 1

    return _errors("job", body)


def run_cancel(args: argparse.Namespace) -> int:
    def body() -> int:
        with _client(args) as client:
            try:
                view = client.cancel(args.job_id)
            except ConflictError as exc:
                print(f"dlpipe cancel: {exc.detail}", file=sys.stderr)
                return 1
        print(json.dumps({"id": view.id, "status": view.status.value, "error": view.error}))
        return 0

    return _errors("cancel", body)
