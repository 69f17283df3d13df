"""In-process measurements, each run by the bench as a child process that prints one JSON line
(so the bench itself never loads torch, and each measurement starts clean):

    python -m bench.measure limit  --batches 1,2,4,8,16 --threads 1,2 --seconds 2
    python -m bench.measure stages --workloads image-classify,image-tag --threads 1 --seconds 3

`limit`: the model's forward pass alone (`predict`, which includes its uint8 -> float scaling)
on ready uint8 224x224 tensors (the real photos, decoded and cropped beforehand), for every
batch size and thread count: images/s, ms per batch, CPU-seconds per image.

`stages`: every stage of a workload run alone, in turn, in one process (bench.runner), each item
a 1920x1080 JPEG: CPU-seconds (all threads of the process) and wall ms per item of each stage, at
batch size 1 and at the first model's configured max_batch_size (model stages batched; CPU stages
always one item at a time). These are the work-conserving ceiling's inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("bench.measure")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def measure_limit(model_name: str, batches: list[int], threads: list[int], seconds: float) -> dict[str, Any]:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from bench.photos import fhd_jpegs  # noqa: PLC0415
    from bench.runner import PipelineRunner  # noqa: PLC0415
    from shared.callables import resolve  # noqa: PLC0415
    from workers.transforms.image import decode_resize_crop  # noqa: PLC0415

    config = PipelineRunner("image-classify").config
    spec = config.models[model_name]
    model = resolve(spec.class_path)(**spec.params)
    model.load(torch.device("cpu"))
    crops = [decode_resize_crop({"image": jpeg}) for jpeg in fhd_jpegs()]
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for batch in batches:
            tensor = torch.from_numpy(np.stack([crops[i % len(crops)] for i in range(batch)]))
            with torch.inference_mode():
                for _ in range(3):  # warm up this shape and thread count
                    model.predict(tensor)
                runs, cpu0, t0 = 0, time.process_time(), time.perf_counter()
                while time.perf_counter() - t0 < seconds or runs < 3:
                    model.predict(tensor)
                    runs += 1
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            rows.append(
                {
                    "batch": batch,
                    "threads": n_threads,
                    "images_per_s": round(runs * batch / wall, 2),
                    "ms_per_batch": round(wall / runs * 1000, 2),
                    "cpu_s_per_image": round(cpu / (runs * batch), 5),
                }
            )
            log.info("limit batch=%d threads=%d %.1f images/s", batch, n_threads, runs * batch / wall)
    return {"model": model_name, "configs": rows}


def measure_stages(workloads: list[str], threads: int, seconds: float) -> dict[str, Any]:
    from bench.photos import fhd_jpegs  # noqa: PLC0415
    from bench.runner import PipelineRunner  # noqa: PLC0415

    jpegs = fhd_jpegs()
    out: dict[str, Any] = {"torch_threads": threads, "workloads": {}}
    for name in workloads:
        runner = PipelineRunner(name, torch_threads=threads).load()
        first_model = next(s.model for s in runner.order if s.model)
        sizes = sorted({1, runner.batch_size(first_model)})
        per_size: dict[str, Any] = {}
        for size in sizes:
            inputs = [{"image": jpegs[i % len(jpegs)]} for i in range(size)]
            for _ in range(2):  # warm up (and fill MiniLM's cache with the taxonomy)
                runner.run(inputs)
            runner.costs.clear()
            jobs, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds or jobs < 3 * size:
                items = runner.run(inputs)
                failed = [i.error for i in items if i.error is not None]
                if failed:
                    raise RuntimeError(f"{name}: an item failed: {failed[0]}")
                jobs += size
            stages: dict[str, dict[str, Any]] = {
                stage.name: {
                    "kind": str(stage.kind.value if hasattr(stage.kind, "value") else stage.kind),
                    "model": stage.model,
                    "cpu_ms": round(runner.costs[stage.name].cpu_s / jobs * 1000, 3),
                    "wall_ms": round(runner.costs[stage.name].wall_s / jobs * 1000, 3),
                }
                for stage in runner.order
            }
            per_size[str(size)] = {
                "jobs": jobs,
                "stages": stages,
                "cpu_s_per_job": round(sum(s["cpu_ms"] for s in stages.values()) / 1000, 6),
            }
            log.info(
                "stages %s batch=%d: %.1f ms CPU per job",
                name,
                size,
                per_size[str(size)]["cpu_s_per_job"] * 1000,
            )
        out["workloads"][name] = {"batch_sizes": per_size}
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p_limit = sub.add_parser("limit")
    p_limit.add_argument("--model", default="efficientnet_lite0")
    p_limit.add_argument("--batches", type=_ints, default=[1, 2, 4, 8, 16])
    p_limit.add_argument("--threads", type=_ints, required=True)
    p_limit.add_argument("--seconds", type=float, default=2.0)
    p_stages = sub.add_parser("stages")
    p_stages.add_argument("--workloads", default="image-classify")
    p_stages.add_argument("--threads", type=int, required=True)
    p_stages.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.what == "limit":
        result = measure_limit(args.model, args.batches, args.threads, args.seconds)
    else:
        result = measure_stages([w for w in args.workloads.split(",") if w], args.threads, args.seconds)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
