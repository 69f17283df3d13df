"""`dlpipe bench --device sim`'s pure parts and flags: the loads of a window, the peers' tuning
tries and pick, the device's figures over repeats, the targets, the table, and the stack
overhead of the CPU bench."""

from __future__ import annotations

import pytest

from bench import aggregate, flags, report, simbench, tuning
from bench.sim.pipelines import SimSpec
from tests.support.benchruns import sample_turns, sample_window


def test_a_sim_window_list_is_the_clients_then_poisson_rates_of_the_ceiling() -> None:
    spec = SimSpec.published(scale=8.0)
    ceiling = spec.ceiling_items_per_s("sim-chain")
    loads = simbench.loads([8, 24], [0.5, 0.9], spec, "sim-chain")
    assert loads[:2] == [(8, None), (24, None)]
    assert [label for label, _ in loads[2:]] == ["poisson 50%", "poisson 90%"]
    assert [rate for _, rate in loads[2:]] == pytest.approx([0.5 * ceiling, 0.9 * ceiling])
    assert simbench.loads([8], [0.5], None, "image-classify") == [(8, None)]  # on the CPU: closed only


def test_tuning_tries_the_peers_shapes_and_keeps_the_best_without_errors() -> None:
    cpu = tuning.candidates("litserve", "cpu", 2, 8, 2.0)
    assert {(c["workers"], c["threads"]) for c in cpu} == {(1, 2), (2, 1)}
    assert cpu[0] == {"workers": 1, "threads": 2, "max_batch_size": 8, "batch_timeout_ms": 2.0}  # as before
    assert [c["workers"] for c in tuning.candidates("ray", "cpu", 2, 8, 2.0)] == [1, 2]
    sim = tuning.candidates("litserve", "sim", 2, 8, 2.0)
    assert sorted({c["workers"] for c in sim}) == [1, 2, 3, 4] and {c["batch_timeout_ms"] for c in sim} == {
        2.0,
        30.0,
    }
    windows = {1: (10.0, 0), 2: (30.0, 3), 3: (20.0, 0)}  # the fastest had errors

    def measure(config: dict) -> dict:
        if config["workers"] == 4:
            raise RuntimeError("did not start")
        jobs, errors = windows[config["workers"]]
        return {"jobs_per_s": jobs, "errors": errors, "latency": {"p99_ms": 100.0}}

    tries = [{"workers": w} for w in (1, 2, 3, 4)]
    result = tuning.tune("litserve", tries, measure, "how")
    assert result["best"] == {"workers": 3}
    assert [t["jobs_per_s"] for t in result["tries"]] == [10.0, 30.0, 20.0, None]
    assert "did not start" in result["tries"][3]["error"]


def _sim_window(system: str, load: int | str, jobs: float, duty: float, batch: float, p99: float) -> dict:
    w = sample_window(jobs, p99 / 3)
    w.update({"workload": "sim-chain", "concurrency": load})
    w["latency"]["p99_ms"] = p99
    w["device"] = {
        "duty_cycle": duty,
        "of_ceiling": round(jobs / 20.0, 4),
        "ceiling_items_per_s": 20.0,
        "overlap_s": 0.0,
        "models": {"sim_detect": {"mean_batch_size": batch}},
    }
    if isinstance(load, str):
        w["arrivals_per_s"] = 10.0
    return w


def test_the_sim_summary_keeps_the_device_figures_and_checks_the_targets() -> None:
    turns = []
    for r in range(3):
        turns += [
            {
                "repeat": r,
                "system": "dlpipe",
                "windows": [
                    _sim_window("dlpipe", 8, 12.0, 0.97, 4.0, 900.0),
                    _sim_window("dlpipe", 24, 18.5 + r, 0.97, 7.6, 1500.0),
                    _sim_window("dlpipe", "poisson 50%", 10.0, 0.6, 3.0, 800.0),
                ],
            },
            {
                "repeat": r,
                "system": "dlpipe-oldest",
                "windows": [
                    _sim_window("dlpipe-oldest", 8, 10.0, 0.98, 2.5, 1000.0),
                    _sim_window("dlpipe-oldest", 24, 13.0, 0.98, 4.9, 1800.0),
                ],
            },
            {
                "repeat": r,
                "system": "litserve",
                "windows": [_sim_window("litserve", 24, 14.0, 0.9, 6.0, 1900.0)],
            },
            {
                "repeat": r,
                "system": "baseline",
                "windows": [_sim_window("baseline", 24, 3.0, 0.8, 1.0, 8000.0)],
            },
        ]
    s = aggregate.summarize(turns, cores=2)
    assert list(s["http"]["sim-chain"]) == ["8", "24", "poisson 50%"]  # clients, then open loop
    dl = s["http"]["sim-chain"]["24"]["dlpipe"]
    assert dl["device"] == {
        "duty_cycle": 0.97,
        "of_ceiling": 0.975,
        "ceiling_items_per_s": 20.0,
        "overlap_s": 0.0,
        "mean_batch_size": {"sim_detect": 7.6},
    }
    assert s["http"]["sim-chain"]["poisson 50%"]["dlpipe"]["arrivals_per_s"] == 10.0
    targets = s["targets"]["sim-chain@24"]
    assert targets["of_ceiling"] == {"value": 0.975, "target": 0.9, "met": True}
    assert (
        targets["vs_litserve"]["value"] == pytest.approx(19.5 / 14.0, abs=1e-3)
        and targets["vs_litserve"]["met"]
    )
    assert targets["vs_sequential"]["met"] and targets["duty_cycle"]["met"]
    assert targets["p99_at_8_vs_oldest"] == {"value": 900.0, "target": 1000.0, "met": True}
    doc = report.build(
        {"repeats": 3, "peer_threads": 2, "limit_threads": [1]},
        {
            "dlpipe_settings": {"torch_threads": 1, "preprocess_concurrency": 2},
            "peers": {},
            "wall_s": 1.0,
            "turns": turns,
            "tuning": {"litserve": {"best": {"workers": 2}}},
        },
        s,
    )
    assert report.validate(doc) == []
    assert doc["threads"]["peers_tuned"] == {"litserve": {"workers": 2}}
    text = report.table(doc)
    assert "poisson 50%" in text and "dlpipe-oldest" in text and "targets sim-chain@24" in text


def test_the_cpu_summary_says_the_stack_overhead_per_job() -> None:
    s = aggregate.summarize(sample_turns(), cores=2)
    # dlpipe's 50 ms of CPU per job against the stages' 36.2 ms, each run alone
    assert s["ratios"]["image-classify"]["8"]["dlpipe_stack_overhead_ms_per_job"] == pytest.approx(13.8)
    assert s["targets"]["image-classify@8"]["stack_overhead_ms_per_job"]["met"] is False
    assert s["targets"]["image-classify@8"]["vs_litserve"] == {"value": None, "target": 1.3, "met": None}


def test_the_sim_flags_fill_their_own_defaults_and_refuse_what_does_not_run_there() -> None:
    parser = flags.build_parser()
    args = parser.parse_args(["--device", "sim"])
    flags.fill_defaults(args, parser)
    assert args.systems == ["dlpipe", "dlpipe-oldest", "baseline", "litserve"]
    assert args.workloads == ["sim-chain", "sim-classify"] and args.concurrency == [8, 24, 64]
    assert args.open_loop == [0.5, 0.9]
    spec = flags.sim_spec(parser.parse_args(["--device", "sim", "--sim-costs", "sim_detect=10,1"]))
    assert spec.costs["sim_detect"].a_ms == 10.0 and spec.costs["sim_classify"].a_ms > 10.0
    for wrong in (["--device", "sim", "--systems", "limit"], ["--workloads", "sim-chain"]):
        args = parser.parse_args(wrong)
        with pytest.raises(SystemExit):
            flags.fill_defaults(args, parser)
