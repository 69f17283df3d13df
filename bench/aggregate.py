"""From the turns of a run to its summary: medians over repeats, the model-only limit, the
work-conserving ceilings, and the ratios. Pure functions of the turn records."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from bench.stats import ceiling, median_or_none, ratio

# dlpipe processes that run no stage: their CPU per job is the stack's overhead in the ceiling.
STACK_OVERHEAD_ROLES = ("api", "redis", "supervisor", "notifier")


def _median(values: list[float | None], digits: int = 3) -> float | None:
    m = median_or_none(values)
    return None if m is None else round(m, digits)


def http_summary(turns: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """workload -> str(concurrency) -> system -> medians over the repeats."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for turn in turns:
        for w in turn.get("windows", []):
            groups[(w["workload"], w["concurrency"], turn["system"])].append(w)
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for (workload, concurrency, system), windows in sorted(groups.items(), key=_group_order):
        roles = sorted({r for w in windows for r in (w["cpu_s_per_job"] or {})})
        models = sorted({m for w in windows for m in (w["models"] or {})})
        out[workload][str(concurrency)][system] = {
            "repeats": len(windows),
            "jobs_per_s": _median([w["jobs_per_s"] for w in windows], 2),
            "jobs_per_s_each": [w["jobs_per_s"] for w in windows],
            "latency_ms": {
                q: _median([w["latency"][f"{q}_ms"] for w in windows], 1) for q in ("p50", "p95", "p99")
            },
            "errors": sum(w["errors"] for w in windows),
            "cpu_s_per_job": {
                r: _median([(w["cpu_s_per_job"] or {}).get(r) for w in windows], 5) for r in roles
            },
            "cpu_s_per_job_total": _median([w["cpu_s_per_job_total"] for w in windows], 5),
            "client_cpu_s_per_job": _median([w["client_cpu_s_per_job"] for w in windows], 5),
            "models": {
                m: {
                    k: _median([((w["models"] or {}).get(m) or {}).get(k) for w in windows], 3)
                    for k in ("duty_cycle", "mean_batch_size")
                }
                for m in models
            },
        }
        device = _device_summary(windows)
        if device is not None:
            out[workload][str(concurrency)][system]["device"] = device
        rates = [w["arrivals_per_s"] for w in windows if "arrivals_per_s" in w]
        if rates:
            out[workload][str(concurrency)][system]["arrivals_per_s"] = rates[0]
    return out


def _group_order(group: tuple[tuple[str, int | str, str], Any]) -> tuple[str, int, int, str, str]:
    """Closed-loop windows by client count, then open-loop ones by label."""
    (workload, concurrency, system), _ = group
    if isinstance(concurrency, int):
        return workload, 0, concurrency, "", system
    return workload, 1, 0, str(concurrency), system


def _device_summary(windows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians over repeats of what the simulated device logged (bench/simbench.py)."""
    seen = [w["device"] for w in windows if w.get("device")]
    if not seen:
        return None
    models = sorted({m for d in seen for m in d["models"]})
    return {
        "duty_cycle": _median([d["duty_cycle"] for d in seen], 3),
        "of_ceiling": _median([d["of_ceiling"] for d in seen], 3),
        "ceiling_items_per_s": seen[0]["ceiling_items_per_s"],
        "overlap_s": max(d["overlap_s"] for d in seen),
        "mean_batch_size": {
            m: _median([(d["models"].get(m) or {}).get("mean_batch_size") for d in seen], 2) for m in models
        },
    }


def limit_summary(turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Median images/s per (batch, threads) over the repeats; the best of them is the limit."""
    per: dict[tuple[int, int], list[float]] = defaultdict(list)
    model = None
    for turn in turns:
        if "limit" in turn:
            model = turn["limit"]["model"]
            for row in turn["limit"]["configs"]:
                per[(row["batch"], row["threads"])].append(row["images_per_s"])
    if not per:
        return None
    table = [
        {"batch": b, "threads": t, "images_per_s": round(statistics.median(v), 2), "runs": len(v)}
        for (b, t), v in sorted(per.items())
    ]
    best = max(table, key=lambda row: row["images_per_s"])
    return {"model": model, "best": best, "configs": table}


def stage_summary(turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """workload -> batch size -> stage -> median CPU ms per item, and CPU-seconds per job."""
    per: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    threads = None
    for turn in turns:
        if "stages" in turn:
            threads = turn["stages"]["torch_threads"]
            for workload, data in turn["stages"]["workloads"].items():
                for size, row in data["batch_sizes"].items():
                    for stage, cost in row["stages"].items():
                        per[(workload, size, stage)].append(cost["cpu_ms"])
    if not per:
        return None
    out: dict[str, Any] = {"torch_threads": threads, "workloads": defaultdict(dict)}
    for (workload, size, stage), values in per.items():
        entry = out["workloads"][workload].setdefault(size, {"stages_cpu_ms": {}})
        entry["stages_cpu_ms"][stage] = round(statistics.median(values), 3)
    for sizes in out["workloads"].values():
        for entry in sizes.values():
            entry["cpu_s_per_job"] = round(sum(entry["stages_cpu_ms"].values()) / 1000.0, 6)
    out["workloads"] = dict(out["workloads"])
    return out


def ceilings(stages: dict[str, Any] | None, http: dict[str, Any], cores: int) -> dict[str, Any]:
    """workload -> {compute_only, with_stack_overhead: concurrency -> ceiling}.

    compute_only: cores / the CPU-seconds of all stages of one job, each measured alone (the
    cheapest of the measured batch sizes). with_stack_overhead adds, per job, the CPU time of
    dlpipe's processes that run no stage (STACK_OVERHEAD_ROLES: API incl. the clients' polls,
    Redis, supervisor, notifier) measured in dlpipe's turns at that concurrency. Neither counts
    the load client's own CPU nor the workers' bookkeeping around the stages.
    """
    out: dict[str, Any] = {}
    if not stages:
        return out
    for workload, sizes in stages["workloads"].items():
        size, best = min(sizes.items(), key=lambda kv: kv[1]["cpu_s_per_job"])
        stage_cpu = {name: ms / 1000.0 for name, ms in best["stages_cpu_ms"].items()}
        entry = {
            "batch_size": int(size),
            "torch_threads": stages["torch_threads"],
            "compute_only": ceiling(cores, stage_cpu),
            "with_stack_overhead": {},
        }
        for concurrency, by_system in http.get(workload, {}).items():
            dl = by_system.get("dlpipe")
            if not dl or not dl["cpu_s_per_job"]:
                continue
            overhead = {r: dl["cpu_s_per_job"].get(r) or 0.0 for r in STACK_OVERHEAD_ROLES}
            entry["with_stack_overhead"][concurrency] = {
                **ceiling(cores, stage_cpu, sum(overhead.values())),
                "overhead_cpu_s_per_job": overhead,
            }
        out[workload] = entry
    return out


def ratios(http: dict[str, Any], ceil: dict[str, Any], limit: dict[str, Any] | None) -> dict[str, Any]:
    """workload -> concurrency -> dlpipe's jobs/s over each other system's, the ceilings, the limit."""
    out: dict[str, Any] = defaultdict(dict)
    for workload, by_conc in http.items():
        for concurrency, by_system in by_conc.items():
            if "dlpipe" not in by_system:
                continue  # the API-alone turn's windows: nothing to compare with
            dl = (by_system.get("dlpipe") or {}).get("jobs_per_s")
            row: dict[str, Any] = {
                f"dlpipe/{s}": ratio(dl, by_system[s]["jobs_per_s"]) for s in by_system if s != "dlpipe"
            }
            c = ceil.get(workload)
            if c:
                row["dlpipe/ceiling"] = ratio(dl, c["compute_only"]["jobs_per_s"])
                with_oh = c["with_stack_overhead"].get(concurrency)
                row["dlpipe/ceiling_with_overhead"] = ratio(dl, with_oh["jobs_per_s"]) if with_oh else None
            if limit and workload == "image-classify":  # one image, one forward row per job
                row["dlpipe/limit"] = ratio(dl, limit["best"]["images_per_s"])
            models = (by_system.get("dlpipe") or {}).get("models") or {}
            row["dlpipe_duty_cycle"] = {m: v["duty_cycle"] for m, v in models.items()} or None
            device = (by_system.get("dlpipe") or {}).get("device")
            if device:
                row["dlpipe/device_ceiling"] = device["of_ceiling"]
                row["dlpipe_device_duty"] = device["duty_cycle"]
            if c and by_system["dlpipe"].get("cpu_s_per_job_total") is not None:
                # What dlpipe spends per job beyond its stages' own work, each run alone.
                overhead = by_system["dlpipe"]["cpu_s_per_job_total"] - c["compute_only"]["cpu_s_per_job"]
                row["dlpipe_stack_overhead_ms_per_job"] = round(overhead * 1000.0, 2)
            out[workload][concurrency] = row
    return dict(out)


def summarize(turns: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    http = http_summary(turns)
    limit = limit_summary(turns)
    stages = stage_summary(turns)
    ceil = ceilings(stages, http, cores)
    rat = ratios(http, ceil, limit)
    return {
        "http": {w: {c: dict(s) for c, s in by_c.items()} for w, by_c in http.items()},
        "limit": limit,
        "stages": stages,
        "ceiling": ceil,
        "ratios": rat,
        "targets": targets(http, rat),
        "failed_turns": [
            {"system": t["system"], "repeat": t["repeat"], "error": t["error"]} for t in turns if "error" in t
        ],
    }


# The targets (12): on the simulated chain, and on the CPU bench.
SIM_CHAIN_TARGETS = {
    "clients": "24",
    "of_ceiling": 0.9,
    "duty_cycle": 0.95,
    "vs_litserve": 1.3,
    "vs_sequential": 5.0,
}
CPU_TARGETS = {"vs_litserve": 1.3, "stack_overhead_ms_per_job": 8.0}


def targets(http: dict[str, Any], rat: dict[str, Any]) -> dict[str, Any]:
    """Each target met or not (None: not measured in this run), with the figures."""
    out: dict[str, Any] = {}
    chain = http.get("sim-chain", {})
    at = chain.get(SIM_CHAIN_TARGETS["clients"], {})
    dl = at.get("dlpipe")
    if dl and dl.get("device"):
        r = rat.get("sim-chain", {}).get(SIM_CHAIN_TARGETS["clients"], {})
        checks = {
            "of_ceiling": (dl["device"]["of_ceiling"], SIM_CHAIN_TARGETS["of_ceiling"]),
            "duty_cycle": (dl["device"]["duty_cycle"], SIM_CHAIN_TARGETS["duty_cycle"]),
            "vs_litserve": (r.get("dlpipe/litserve"), SIM_CHAIN_TARGETS["vs_litserve"]),
            "vs_sequential": (r.get("dlpipe/baseline"), SIM_CHAIN_TARGETS["vs_sequential"]),
        }
        entry = {
            k: {"value": v, "target": t, "met": None if v is None else v >= t} for k, (v, t) in checks.items()
        }
        eight = chain.get("8", {})
        new, old = (
            (eight.get("dlpipe") or {}).get("latency_ms", {}),
            (eight.get("dlpipe-oldest") or {}).get("latency_ms", {}),
        )
        if new.get("p99") is not None and old.get("p99") is not None:
            entry["p99_at_8_vs_oldest"] = {
                "value": new["p99"],
                "target": old["p99"],
                "met": new["p99"] <= old["p99"],
            }
        out["sim-chain@24"] = entry
    for concurrency, row in rat.get("image-classify", {}).items():
        if "dlpipe/litserve" in row or "dlpipe_stack_overhead_ms_per_job" in row:
            vs, overhead = row.get("dlpipe/litserve"), row.get("dlpipe_stack_overhead_ms_per_job")
            out[f"image-classify@{concurrency}"] = {
                "vs_litserve": {
                    "value": vs,
                    "target": CPU_TARGETS["vs_litserve"],
                    "met": None if vs is None else vs >= CPU_TARGETS["vs_litserve"],
                },
                "stack_overhead_ms_per_job": {
                    "value": overhead,
                    "target": CPU_TARGETS["stack_overhead_ms_per_job"],
                    "met": None if overhead is None else overhead <= CPU_TARGETS["stack_overhead_ms_per_job"],
                },
            }
    return out
