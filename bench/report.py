"""The run's record: the machine, the versions, the settings, every turn and the summary, as
JSON (with a schema check), a PNG chart and a plain-text table."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

SCHEMA = "dlpipe-bench/1"
REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count() or 1,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
    }


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(peers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = None, None
    return {
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "dlpipe": _dist_version("dlpipe"),
        "git_commit": commit,
        "git_dirty": dirty,
        "peers": {name: {"version": p.get("version"), "torch": p.get("torch")} for name, p in peers.items()},
    }


def build(options: dict[str, Any], result: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    dl = result["dlpipe_settings"]
    return {
        "schema": SCHEMA,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(result["peers"]),
        "threads": {
            "dlpipe_torch_threads": dl["torch_threads"],
            "dlpipe_model_replicas": dl.get("model_replicas", 1),
            "dlpipe_preprocess_processes": dl["preprocess_concurrency"],
            "baseline_and_peers_torch_threads": options["peer_threads"],
            "limit_threads": options["limit_threads"],
            "stages_torch_threads": dl["torch_threads"],
            "peers_tuned": {name: t.get("best") for name, t in (result.get("tuning") or {}).items()},
        },
        "options": options,
        "peers": result["peers"],
        # How each peer ran (bench/tuning.py): every configuration tried, its jobs/s, the one kept.
        "peer_tuning": result.get("tuning") or {},
        # The simulated device (--device sim): its cost curves, where they come from, its ceilings.
        "sim": result.get("sim"),
        "wall_s": result["wall_s"],
        "turns": result["turns"],
        "summary": summary,
    }


# -- schema ------------------------------------------------------------------------------

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "created_at": str,
    "machine": dict,
    "versions": dict,
    "threads": dict,
    "options": dict,
    "peers": dict,
    "wall_s": (int, float),
    "turns": list,
    "summary": dict,
}
_MACHINE = {"cpu_model": str, "cores": int, "memory_gb": (int, float)}
_SUMMARY = {
    "http": dict,
    "limit": (dict, type(None)),
    "stages": (dict, type(None)),
    "ceiling": dict,
    "ratios": dict,
    "failed_turns": list,
}
_SYSTEM = {"jobs_per_s": (int, float, type(None)), "latency_ms": dict, "repeats": int}


def _check(obj: Any, spec: dict[str, Any], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected an object"]
    return [f"{where}.{k}: missing or not {t}" for k, t in spec.items() if not isinstance(obj.get(k), t)]


def validate(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a result document (empty: it has the schema's shape)."""
    problems = _check(doc, _REQUIRED, "$")
    if problems:
        return problems
    if doc["schema"] != SCHEMA:
        problems.append(f"$.schema: {doc['schema']!r}, expected {SCHEMA!r}")
    problems += _check(doc["machine"], _MACHINE, "$.machine")
    problems += _check(doc["summary"], _SUMMARY, "$.summary")
    for turn in doc["turns"]:
        if not isinstance(turn, dict) or not {"system", "repeat"} <= turn.keys():
            problems.append("$.turns[]: each turn needs system and repeat")
    for workload, by_conc in doc["summary"].get("http", {}).items():
        for conc, by_system in by_conc.items():
            for system, row in by_system.items():
                where = f"$.summary.http.{workload}.{conc}.{system}"
                problems += _check(row, _SYSTEM, where)
                if (
                    isinstance(row.get("latency_ms"), dict)
                    and not {"p50", "p95", "p99"} <= row["latency_ms"].keys()
                ):
                    problems.append(f"{where}.latency_ms: needs p50, p95, p99")
    return problems


def write(doc: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    try:
        from bench.chart import draw  # noqa: PLC0415 - matplotlib: the `bench` extra

        png_path: Path | None = draw(doc, out_dir / f"{stem}.png")
    except ImportError as exc:
        log.warning("no chart: %s (pip install -e '.[bench]')", exc)
        png_path = None
    return json_path, png_path


# -- the table ---------------------------------------------------------------------------------


def _f(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def table(doc: dict[str, Any]) -> str:
    s, m = doc["summary"], doc["machine"]
    threads = doc["threads"]
    lines = [
        (
            f"dlpipe bench: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GiB; "
            f"{doc['options']['repeats']} repeats, medians; torch threads: dlpipe "
            f"{threads.get('dlpipe_model_replicas', 1)} model worker process(es) x {threads['dlpipe_torch_threads']}, "
            f"baseline/peers {threads['baseline_and_peers_torch_threads']}"
        )
    ]
    if s["limit"]:
        b = s["limit"]["best"]
        lines.append(
            f"model-only limit ({s['limit']['model']}): {b['images_per_s']:.1f} images/s "
            f"(batch {b['batch']}, {b['threads']} threads)"
        )
    wl = max([15, *(len(w) + 1 for w in s["http"])])
    header = (
        f"{'workload':<{wl}}{'clients':>12}  {'system':<14}{'jobs/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'CPU s/job':>10}  duty (mean batch)"
    )
    lines += ["", header, "-" * len(header)]
    for workload, by_conc in s["http"].items():
        c = s["ceiling"].get(workload)
        if c:
            lines.append(
                f"{workload:<{wl}}{'':>12}  {'ceiling':<14}{_f(c['compute_only']['jobs_per_s']):>8}"
                f"{'':>27}{_f(c['compute_only']['cpu_s_per_job'], '{:.4f}'):>10}  (stages alone)"
            )
        for conc, by_system in by_conc.items():
            for system, row in by_system.items():
                duty = ", ".join(
                    f"{name} {_f(v['duty_cycle'], '{:.2f}')} ({_f(v['mean_batch_size'], '{:.2f}')})"
                    for name, v in row["models"].items()
                )
                lat = row["latency_ms"]
                lines.append(
                    f"{workload:<{wl}}{conc:>12}  {system:<14}{_f(row['jobs_per_s']):>8}{_f(lat['p50']):>9}"
                    f"{_f(lat['p95']):>9}{_f(lat['p99']):>9}{_f(row['cpu_s_per_job_total'], '{:.4f}'):>10}"
                    f"  {duty or '-'}{'  ERRORS ' + str(row['errors']) if row['errors'] else ''}"
                )
    devices = [
        (w, c, system, row["device"])
        for w, by_conc in s["http"].items()
        for c, by_system in by_conc.items()
        for system, row in by_system.items()
        if row.get("device")
    ]
    if devices:
        lines += [
            "",
            f"{'simulated device':<{wl}}{'load':>12}  {'system':<14}{'duty':>6}{'of ceiling':>12}  mean batch",
        ]
        for workload, conc, system, d in devices:
            batches = ", ".join(f"{m} {_f(v, '{:.2f}')}" for m, v in d["mean_batch_size"].items())
            lines.append(
                f"{workload:<{wl}}{conc:>12}  {system:<14}{_f(d['duty_cycle'], '{:.3f}'):>6}"
                f"{_f(d['of_ceiling'], '{:.3f}'):>12}  {batches}"
            )
    lines.append("")
    for workload, by_conc in s["ratios"].items():
        for conc, row in by_conc.items():
            parts = [f"{k} {_f(v, '{:.2f}')}" for k, v in row.items() if k not in ("dlpipe_duty_cycle",)]
            duties: dict[str, Any] = row.get("dlpipe_duty_cycle") or {}
            parts += [f"duty {name} {_f(v, '{:.2f}')}" for name, v in duties.items()]
            lines.append(f"ratios {workload} @{conc} clients: " + ", ".join(parts))
    for where, checks in (s.get("targets") or {}).items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}
        parts = [
            f"{k} {_f(v['value'], '{:.3g}')} ({verdict[v['met']]}, target {v['target']})"
            for k, v in checks.items()
        ]
        lines.append(f"targets {where}: " + ", ".join(parts))
    for failed in s["failed_turns"]:
        lines.append(
            f"FAILED turn {failed['system']} (repeat {failed['repeat'] + 1}): {failed['error'][:300]}"
        )
    return "\n".join(lines)
