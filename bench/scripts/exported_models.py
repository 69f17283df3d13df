"""Exported models beside the native one: images/s of EfficientNet-Lite0 per format, one thread.

    .venv/bin/python bench/scripts/exported_models.py --seconds 3

Exports the project's EfficientNet-Lite0 (tests/support/exports.py: the network alone, BatchNorms
folded) to TorchScript, torch.export (.pt2) and ONNX in a temporary folder, loads each through
its generic class (workers/models/exported.py, configured as a pipelines file would) and the
native class (workers/models/efficientnet_lite.py), and times each model's whole predict() on
uint8 NHWC 224x224 batches of 1 and 8 (input normalisation and the softmax included), after a
warm-up, with torch (and onnxruntime) on one thread. Prints one JSON document: images/s per
format and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.exports import FORMATS, NORMALISATION, export  # noqa: E402
from workers.models.base import Model  # noqa: E402
from workers.models.efficientnet_lite import EfficientNetLite0  # noqa: E402
from workers.models.exported import ExportedProgramModel, OnnxModel, TorchScriptModel  # noqa: E402

CLASSES = {"torchscript": TorchScriptModel, "torch.export": ExportedProgramModel, "onnx": OnnxModel}


def images_per_s(model: Model, batch_size: int, seconds: float) -> float:
    batch = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: TorchScript's profiling runs, onnxruntime's first allocations
            model.predict(batch)
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            model.predict(batch)
            runs += 1
    return runs * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timed per format and batch size")
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="dlpipe-exported-"))
    models: dict[str, Model] = {"native": EfficientNetLite0()}
    for fmt, cls in CLASSES.items():
        path = export(fmt, folder)
        models[fmt] = cls(
            path=str(path), input_size=224, layout="NCHW", dtype="float32", **NORMALISATION, output="raw"
        )
    results = {}
    for name, model in models.items():
        model.load(torch.device("cpu"))
        results[name] = {f"batch_{b}": round(images_per_s(model, b, args.seconds), 1) for b in sizes}
    print(
        json.dumps(
            {
                "model": "EfficientNet-Lite0, uint8 NHWC 224x224 in, predict() whole (normalisation, softmax for native)",
                "threads": 1,
                "images_per_s": results,
                "files": {fmt: FORMATS[fmt][0] for fmt in CLASSES},
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
