"""`dlpipe submit PIPELINE PATH...`: every file of the paths through a pipeline, `--concurrency`
jobs in flight, one result line per input (outfile.py), resumable (inputs.py keys each job).

Built on dlpipe.AsyncClient: its retries (429/503 after Retry-After, broken connections) are the
only ones. Exit 0 when every input succeeded; 1 when any failed (0 with --allow-failures) or
could not be sent; 2 for bad arguments; 130 when interrupted (the results file stays valid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import mimetypes
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlpipe import (
    APIError,
    AsyncClient,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    TransportError,
    UnavailableError,
)
from services.cli_client.inputs import EXTENSIONS, InputError, Source, discover, group, job_key
from services.cli_client.outfile import ResultsFile
from services.cli_client.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
# --per-job auto: small files share a job (up to AUTO_PER_JOB of them, AUTO_JOB_BYTES together), a
# file of AUTO_JOB_BYTES or more goes alone. A request costs the API about the same whatever its size,
# which matters when the files are small; for photos, one per job keeps `--concurrency` of them in
# flight all the time (a job of several waits for its slowest), which measured as fast or faster
# (bench/scripts/cli_folder.py).
AUTO_PER_JOB = 16
AUTO_JOB_BYTES = 256 * 1024
OCTETS = "application/octet-stream"
MAX_JOB_BYTES = 16 * 1024 * 1024  # a job's files together (the API takes 64 MiB bodies by default)
RETRIES = 30  # 429s while the backlog is full are the normal pace of a big folder: keep at it
EXPIRED_JOB_RETRIES = 2  # a key's job gone (its TTL is shorter than the key's): sent under a new key


def add_arguments(parser: argparse.ArgumentParser, positive_int: Any) -> None:
    parser.add_argument("pipeline", help="pipeline name (GET /v1/pipelines lists them)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to send")
    parser.add_argument(
        "--out", type=Path, help="results file (JSON lines); a rerun skips inputs already in it"
    )
    parser.add_argument(
        "--concurrency",
        dest="in_flight",
        metavar="N",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"jobs in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--per-job",
        metavar="N",
        type=positive_int,
        help=f"inputs per job, at most (capped by the API's max_inputs). Default: files under "
        f"{AUTO_JOB_BYTES // 1024} KiB share jobs, {AUTO_PER_JOB} or {AUTO_JOB_BYTES // 1024} KiB at "
        "most; larger ones go alone",
    )
    parser.add_argument("--recursive", "-r", action="store_true", help="go into sub-folders")
    parser.add_argument(
        "--all-files",
        action="store_true",
        help="send every file of a folder (default: only the extensions of the pipeline's input kind)",
    )
    parser.add_argument("--timeout-s", type=float, help="each job's deadline (its `timeout_s`)")
    parser.add_argument("--webhook", help="URL each job's completion is POSTed to")
    parser.add_argument("--metadata", help="JSON object stored with each job")
    parser.add_argument("--allow-failures", action="store_true", help="exit 0 even when some inputs failed")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (a summary still ends the run)"
    )


@dataclass
class Run:
    client: AsyncClient
    pipeline: str
    fields: dict[str, Any]  # webhook, metadata, timeout_s: the same for every job
    done: dict[str, str]  # sources already in the results file: their status
    results: ResultsFile
    progress: Progress
    max_input_bytes: int
    unsent: int = 0
    unsent_reason: str = ""
    jobs: list[str] = field(default_factory=list)

    def finish(self, records: list[dict[str, Any]]) -> None:
        records = [r for r in records if r["source"] not in self.done]
        self.done.update((r["source"], r["status"]) for r in records)
        self.results.write(records)
        self.progress.add(records)

    def not_sent(self, count: int, exc: Exception) -> None:
        """No line for these: a rerun sends them again."""
        self.unsent += count
        self.unsent_reason = str(exc)
        self.progress.unsent(count)

    async def run_job(self, sources: list[Source]) -> None:
        loaded = await asyncio.to_thread(_read, sources, self.max_input_bytes)
        self.finish([_failed(s.name, error) for s, error in loaded if isinstance(error, str)])
        files = [(s.name, data) for s, data in loaded if isinstance(data, bytes)]
        if files:
            await self.send(files, split=True)

    async def send(self, files: list[tuple[str, bytes]], split: bool) -> None:
        key = job_key(self.pipeline, self.fields, files)
        parts = [(name, data, mimetypes.guess_type(name)[0] or OCTETS) for name, data in files]
        for attempt in range(EXPIRED_JOB_RETRIES + 1):
            try:
                view = await self.client.submit(
                    self.pipeline,
                    files=parts,
                    wait=True,
                    idempotency_key=key if not attempt else f"{key}.{attempt}",
                    **self.fields,
                )
                break
            except NotFoundError:  # the pipeline exists (checked first): the key's job has expired
                if attempt == EXPIRED_JOB_RETRIES:
                    expired = "its job expired before its results were read"
                    self.finish([_failed(name, expired) for name, _ in files])
                    return
            except InvalidRequestError as exc:
                if split and len(files) > 1:  # one bad file refuses the whole job: send them one by one
                    for one in files:
                        await self.send([one], split=False)
                    return
                self.finish([_failed(name, exc.detail) for name, _ in files])
                return
            except (TransportError, RateLimitedError, UnavailableError) as exc:
                self.not_sent(len(files), exc)
                return
            except APIError as exc:
                if exc.status_code >= 500 or exc.status_code in (401, 403):  # not the files' fault
                    self.not_sent(len(files), exc)
                else:
                    self.finish([_failed(name, str(exc)) for name, _ in files])
                return
        self.jobs.append(view.id)
        records = []
        for (name, _), output in zip(files, view.outputs, strict=False):
            record: dict[str, Any] = {"source": name, "status": output.status.value, "job": view.id}
            if output.result is not None:
                record["result"] = output.result
            if output.error is not None:
                record["error"] = output.error
            records.append(record)
        self.finish(records)


def _failed(name: str, error: str) -> dict[str, Any]:
    return {"source": name, "status": "failed", "job": None, "error": error}


def _read(sources: list[Source], max_bytes: int) -> list[tuple[Source, bytes | str]]:
    """Each file's bytes, or why it is not sent (read here, not by the API)."""
    out: list[tuple[Source, bytes | str]] = []
    for source in sources:
        try:
            data = source.path.read_bytes()
        except OSError as exc:
            out.append((source, f"cannot read the file: {exc.strerror or exc}"))
            continue
        if not data:
            out.append((source, "empty file"))
        elif len(data) > max_bytes:
            out.append((source, f"larger than the API's max_input_bytes ({max_bytes})"))
        else:
            out.append((source, data))
    return out


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.webhook:
        fields["webhook"] = args.webhook
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise InputError(f"--metadata: not JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise InputError("--metadata: must be a JSON object")
        fields["metadata"] = metadata
    if args.timeout_s is not None:
        fields["timeout_s"] = args.timeout_s
    return fields


async def _submit_all(args: argparse.Namespace, results: ResultsFile, state: dict[str, Any]) -> int:
    fields = _job_fields(args)
    async with AsyncClient(
        args.url, api_key=args.api_key, max_retries=RETRIES, max_connections=args.in_flight * 2
    ) as client:
        info = await client.pipeline(args.pipeline)
        if info.input.multipart_field is None:
            raise InputError(
                f"pipeline {args.pipeline!r} takes JSON inputs only (use dlpipe.Client().submit(inputs=...))"
            )
        extensions = None if args.all_files else EXTENSIONS.get(info.input.kind)
        sources = discover(args.paths, recursive=args.recursive, extensions=extensions)
        done = results.load()
        if args.per_job is None:
            jobs = group(sources, min(AUTO_PER_JOB, info.input.max_inputs), AUTO_JOB_BYTES)
        else:
            jobs = group(sources, min(args.per_job, info.input.max_inputs), MAX_JOB_BYTES)
        todo = [job for job in jobs if any(s.name not in done for s in job)]
        missing = sum(1 for s in sources if s.name not in done)
        progress = Progress(missing, enabled=not args.no_progress)
        run = Run(client, args.pipeline, fields, done, results, progress, info.input.max_input_bytes)
        state.update(run=run, total=len(sources), skipped=len(sources) - missing)
        queue: asyncio.Queue[list[Source]] = asyncio.Queue()
        for job in todo:
            queue.put_nowait(job)

        async def worker() -> None:
            while not queue.empty():
                await run.run_job(queue.get_nowait())

        started = time.monotonic()
        results.open()
        try:
            await asyncio.gather(*(worker() for _ in range(min(args.in_flight, len(todo)) or 1)))
        finally:
            progress.close()
        elapsed = time.monotonic() - started
    statuses = [run.done.get(s.name) for s in sources]
    ok = sum(1 for status in statuses if status == "succeeded")
    failed = sum(1 for status in statuses if status not in (None, "succeeded"))
    now = progress.succeeded + progress.failed
    rate = now / elapsed if elapsed > 0 else 0.0
    where = f" -> {results.path}" if results.path else ""
    print(
        f"dlpipe submit: {len(sources)} inputs: {ok} succeeded, {failed} failed, {run.unsent} not sent "
        f"({now} ended in this run, {len(sources) - missing} were done before); {len(set(run.jobs))} jobs "
        f"in {elapsed:.1f} s ({rate:.1f} inputs/s){where}",
        file=sys.stderr,
    )
    if run.unsent:
        print(
            f"dlpipe submit: {run.unsent} inputs not sent ({run.unsent_reason}): run the same command "
            "again to send them",
            file=sys.stderr,
        )
        return 1
    return 1 if failed and not args.allow_failures else 0


def run(args: argparse.Namespace) -> int:
    results = ResultsFile(args.out)
    state: dict[str, Any] = {}
    try:
        return asyncio.run(_submit_all(args, results, state))
    except KeyboardInterrupt:
        results.close()
        if args.out is None:
            print("\ndlpipe submit: interrupted (no --out: nothing to resume from)", file=sys.stderr)
        else:
            kept, total = len(results.load()), state.get("total", "?")
            print(
                f"\ndlpipe submit: interrupted: {kept} of {total} inputs are in "
                f"{args.out}; run the same command again to resume (inputs already there are skipped)",
                file=sys.stderr,
            )
        return 130
    except InputError as exc:
        print(f"dlpipe submit: {exc}", file=sys.stderr)
        return 2
    except NotFoundError as exc:
        print(f"dlpipe submit: {exc.detail}", file=sys.stderr)
        return 2
    except (APIError, TransportError) as exc:
        print(f"dlpipe submit: {exc}", file=sys.stderr)
        return 1
    finally:
        results.close()
