"""`dlpipe submit` on a folder of FHD photos against hand-written curl, on one stack, in one run.

    PYTHONPATH=. .venv/bin/python bench/scripts/cli_folder.py                  # 500 photos, every config
    PYTHONPATH=. .venv/bin/python bench/scripts/cli_folder.py --photos 100 --cli 8x4 --cli 16x4

Starts `dlpipe up` on a free port (or measures --url), writes N distinct 1920x1080 JPEGs (real
photos, each shifted and tinted its own way), then sends the whole folder through image-classify
with each client in turn, every client getting every photo's result:

- curl-loop: `for f in *.jpg; do curl -F files=@$f -H 'Prefer: wait=60' URL; done` (one job per
  photo, sequential: what one writes by hand);
- curl-xargs-PN: the same through `xargs -P N` (N at once; --xargs, default 8); with --keyed
  also `-keyed`: each request with an Idempotency-Key, as the CLI sends (what it costs the API);
- dlpipe submit at each `--cli CONCURRENCYxPER_JOB` (its results file, its progress bar off;
  `auto`: no --per-job, the CLI's default).

Each CLI run sends its own `--metadata` so its Idempotency-Keys are new (no job is replayed).
Prints one JSON line per turn (seconds, photos/s, the client's CPU seconds with its children,
results that succeeded) and the median photos/s of each client over `--repeats` rounds.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import ImageOps

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import dlpipe_command, start_stack, stop_stack  # noqa: E402
from tests.support.photos import photo_rgb  # noqa: E402

PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg"]
DEFAULT_CLI = ["1xauto", "8xauto", "16xauto", "16x4", "32xauto"]  # auto: the CLI's default


def write_photos(folder: Path, count: int) -> int:
    """`count` distinct FHD JPEGs (quality 90); their total bytes."""
    bases = [ImageOps.fit(photo_rgb(name), (2000, 1140)) for name in PHOTOS]
    total = 0
    for i in range(count):
        base = bases[i % len(bases)]
        dx, dy = (i * 7) % 80, (i * 3) % 60
        img = base.crop((dx, dy, dx + 1920, dy + 1080))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        (folder / f"photo-{i:04d}.jpg").write_bytes(buf.getvalue())
        total += buf.tell()
    return total


def _fresh(out: Path) -> None:
    """An empty results folder (curl) or no results file (the CLI) for the next turn."""
    if out.name.endswith(".jsonl"):
        out.unlink(missing_ok=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()


def succeeded_lines(text: str) -> int:
    count = 0
    for line in text.splitlines():
        try:
            job = json.loads(line)
        except ValueError:
            continue
        if "outputs" in job:  # curl: a job per photo (200: ended within the wait)
            count += sum(o["status"] == "succeeded" for o in job["outputs"])
        else:  # dlpipe submit's results file
            count += job.get("status") == "succeeded"
    return count


def timed(cmd: str | list[str], out: Path | None = None) -> tuple[float, float, str]:
    """Seconds the command took, the CPU seconds it (and its children: curl) used, and the results
    it left in `out` (a file, or a folder of them)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        print(f"# exit {done.returncode}: {done.stderr[-500:]}", file=sys.stderr)
    if out is None:
        return seconds, cpu, done.stdout
    if out.is_dir():
        return seconds, cpu, "\n".join(p.read_text() for p in sorted(out.iterdir()))
    return seconds, cpu, out.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--url", help="measure this running API instead of starting one")
    parser.add_argument(
        "--cli",
        action="append",
        help="CONCURRENCYxPER_JOB, PER_JOB a number or auto (repeatable; default: a sweep, 16xauto first and last)",
    )
    parser.add_argument("--no-curl", action="store_true")
    parser.add_argument(
        "--keyed", action="store_true", help="xargs runs again with an Idempotency-Key per request"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every client, interleaved (medians printed)"
    )
    parser.add_argument(
        "--xargs", type=int, action="append", help="curl via xargs -P N (repeatable; default 8)"
    )
    args = parser.parse_args()
    configs = args.cli or DEFAULT_CLI
    args.xargs = args.xargs or [8]
    with tempfile.TemporaryDirectory(prefix="dlpipe-cli-bench-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "photos"
        folder.mkdir()
        total_bytes = write_photos(folder, args.photos)
        stack = None
        if args.url:
            url = args.url.rstrip("/")
        else:
            (tmp / "stack").mkdir()
            stack = start_stack(tmp / "stack")
            url = stack.base_url
        submit_url = f"{url}/v1/pipelines/image-classify/jobs"
        print(json.dumps({"photos": args.photos, "mean_bytes": total_bytes // args.photos, "url": url}))
        try:
            warm = sorted(folder.iterdir())[:16]
            timed(
                [
                    *dlpipe_command(),
                    "submit",
                    "image-classify",
                    *map(str, warm),
                    "--url",
                    url,
                    "--no-progress",
                    "--metadata",
                    '{"bench": "warm-up"}',
                    "--out",
                    str(tmp / "warm.jsonl"),
                ]
            )
            runs: list[tuple[str, int, int | str, str | list[str], Path]] = []
            if not args.no_curl:
                q, u = shlex.quote(str(folder)), shlex.quote(submit_url)
                for name, parallel in (("curl-loop", 1), *((f"curl-xargs-P{p}", p) for p in args.xargs)):
                    got = tmp / name
                    out_dir = shlex.quote(str(got))
                    if parallel == 1:
                        cmd = (
                            f"cd {q} && for f in *.jpg; do curl -s -H 'Prefer: wait=60' -F files=@$f "
                            f"-o {out_dir}/$f.json {u}; done"
                        )
                    else:
                        cmd = (
                            f"cd {q} && ls *.jpg | xargs -P {parallel} -I {{}} curl -s -H 'Prefer: wait=60' "
                            f"-F files=@{{}} -o {out_dir}/{{}}.json {u}"
                        )
                    runs.append((name, parallel, 1, cmd, got))
                    if args.keyed and parallel > 1:  # what resumability costs the API: a key per request
                        keyed = tmp / f"{name}-keyed"
                        key = "-H 'Idempotency-Key: bench-{}-'$(date +%s%N)"
                        cmd = (
                            f"cd {q} && ls *.jpg | xargs -P {parallel} -I {{}} sh -c \"curl -s -H 'Prefer: wait=60' "
                            f'{key} -F files=@{{}} -o {shlex.quote(str(keyed))}/{{}}.json {u}"'
                        )
                        runs.append((f"{name}-keyed", parallel, 1, cmd, keyed))
            for config in configs:
                concurrency_text, per_job = config.split("x")
                cmd = [
                    *dlpipe_command(),
                    "submit",
                    "image-classify",
                    str(folder),
                    "--url",
                    url,
                    "--concurrency",
                    concurrency_text,
                    "--no-progress",
                ]
                if per_job != "auto":
                    cmd += ["--per-job", per_job]
                runs.append(("dlpipe-submit", int(concurrency_text), per_job, cmd, tmp / "cli.jsonl"))
            rates: dict[str, list[float]] = {}
            for round_ in range(args.repeats):  # interleaved: the machine's load drifts between turns
                for n, (name, concurrency, per_job, cmd, out) in enumerate(runs):
                    _fresh(out)
                    if name == "dlpipe-submit":  # its own keys: no job of an earlier turn replayed
                        bench = json.dumps({"bench": f"{time.time()}-{round_}-{n}"})
                        cmd = [*cmd, "--out", str(out), "--metadata", bench]  # type: ignore[misc]
                    seconds, cpu, text = timed(cmd, out)
                    record = {
                        "client": name,
                        "concurrency": concurrency,
                        "per_job": per_job,
                        "seconds": round(seconds, 2),
                        "photos_per_s": round(args.photos / seconds, 2),
                        "client_cpu_s": round(cpu, 2),
                        "succeeded": succeeded_lines(text),
                    }
                    print(json.dumps(record), flush=True)
                    rates.setdefault(f"{name} {concurrency}x{per_job}", []).append(record["photos_per_s"])
            summary = {key: round(statistics.median(values), 2) for key, values in rates.items()}
            print(json.dumps({"median_photos_per_s": summary}))
        finally:
            if stack is not None:
                stop_stack(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
