"""The sim bench's pipelines file, its cost curves, and the device's ceiling.

Where the default costs come from. NVIDIA's DeepLearningExamples, ResNet-50 v1.5 for PyTorch
(PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Inference performance: NVIDIA T4",
mixed precision), publishes per batch size the mean latency and throughput:

    batch 1: 12.96 ms (79 img/s)   batch 8: 12.82 ms (652 img/s)   batch 32: 29.54 ms (1128 img/s)

The fixed cost dominates small batches: a batch of 32 costs 2.3x a batch of 1 and does 14x the
images. A line a + b*n through batches 1 and 32 (so their ratio matches) gives
b = (29.54 - 12.96) / 31 = 0.535 ms per image and a = 12.43 ms; it puts batch 8 at 16.7 ms
(6.1x batch 1's throughput where the table has 8.3x: the real curve is flatter still below 16).

A T4 at these costs would do 480 images/s at batch 8 for each model: two CPU cores cannot decode
that many FHD JPEGs, so the CPU, not the device, would be what the bench measures. The device is
therefore slowed by `scale` (the same curve, every cost multiplied: 16 by default, a = 199 ms and
b = 8.6 ms per image) until it, not these cores, is the bottleneck with room to spare (the chain's
CPU work at the device's ceiling is about a third of two cores; at scale 8 it is two thirds, and a
busy machine's other work then makes the CPU the bottleneck); what matters for scheduling is the
curve's shape, the fixed cost's share, which the scale keeps.

The ceiling is what the device does at full batches back to back: for a pipeline whose items
pass through models m (each once) at max batch N_m, items/s = 1 / sum_m (a_m + b_m*N_m) / N_m.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SOURCE = (
    "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "
    "Inference performance: NVIDIA T4, mixed precision: batch 1 12.96 ms, batch 8 12.82 ms, "
    "batch 32 29.54 ms"
)
T4_A_MS = 12.43  # the line through batch 1 (12.96 ms) and batch 32 (29.54 ms)
T4_B_MS = 0.535
DEFAULT_SCALE = 16.0

DETECTOR = "sim_detect"
CLASSIFIER = "sim_classify"
WORKLOADS = ("sim-chain", "sim-classify")
MODELS_OF = {"sim-chain": (DETECTOR, CLASSIFIER), "sim-classify": (CLASSIFIER,)}


@dataclass(frozen=True)
class Cost:
    a_ms: float
    b_ms: float

    def ms(self, n: int) -> float:
        return self.a_ms + self.b_ms * n


@dataclass(frozen=True)
class SimSpec:
    """The simulated device of a run: each model's cost curve and batching."""

    costs: Mapping[str, Cost] = field(default_factory=dict)
    max_batch_size: int = 8
    max_batch_delay_ms: float = 2.0
    scale: float = DEFAULT_SCALE

    @classmethod
    def published(
        cls, scale: float = DEFAULT_SCALE, max_batch_size: int = 8, max_batch_delay_ms: float = 2.0
    ) -> SimSpec:
        cost = Cost(round(T4_A_MS * scale, 3), round(T4_B_MS * scale, 3))
        return cls({DETECTOR: cost, CLASSIFIER: cost}, max_batch_size, max_batch_delay_ms, scale)

    def ceiling_items_per_s(self, workload: str) -> float:
        """Items/s of the device at full batches back to back, for one pipeline's models."""
        n = self.max_batch_size
        per_item_ms = sum(self.costs[m].ms(n) / n for m in MODELS_OF[workload])
        return 1000.0 / per_item_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": SOURCE,
            "t4_curve_ms": {"a": T4_A_MS, "b": T4_B_MS},
            "scale": self.scale,
            "costs_ms": {m: {"a": c.a_ms, "b": c.b_ms} for m, c in self.costs.items()},
            "max_batch_size": self.max_batch_size,
            "max_batch_delay_ms": self.max_batch_delay_ms,
            "ceiling_items_per_s": {w: round(self.ceiling_items_per_s(w), 2) for w in WORKLOADS},
        }


def document(spec: SimSpec, device_dir: Path) -> dict[str, Any]:
    """The pipelines file: `sim-chain` (decode -> A -> decode the original again and crop -> B ->
    top 5) and `sim-classify` (decode -> B -> top 5, image-classify's shape)."""
    batching = {"max_batch_size": spec.max_batch_size, "max_batch_delay_ms": spec.max_batch_delay_ms}

    def model(cls: str, name: str) -> dict[str, Any]:
        cost = spec.costs[name]
        params = {"device": str(device_dir), "name": name, "a_ms": cost.a_ms, "b_ms": cost.b_ms}
        return {"class": f"bench.sim.models:{cls}", "params": params, "batching": batching}

    decode = {
        "name": "decode",
        "kind": "preprocess",
        "fn": "workers.transforms.image:decode_resize_crop",
        "params": {"resize": 256, "crop": 224},
    }
    top5 = {"kind": "postprocess", "fn": "workers.transforms.imagenet:top_k_labels", "params": {"k": 5}}
    return {
        "models": {DETECTOR: model("SimDetector", DETECTOR), CLASSIFIER: model("SimClassifier", CLASSIFIER)},
        "pipelines": {
            "sim-chain": {
                "description": "Detect the main region (model A), decode the original again and crop "
                "it, classify the crop (model B): the top 5 classes.",
                "input": "image",
                "stages": [
                    decode,
                    {"name": "detect", "kind": "model", "model": DETECTOR},
                    {
                        "name": "crop",
                        "kind": "preprocess",
                        "fn": "bench.sim.stages:crop_box",
                        "needs": ["input", "detect"],
                        "params": {"size": 224},
                    },
                    {"name": "classify", "kind": "model", "model": CLASSIFIER, "needs": ["crop"]},
                    {"name": "result", "needs": ["classify"], **top5},
                ],
            },
            "sim-classify": {
                "description": "Classify an image with the simulated classifier: the top 5 classes.",
                "input": "image",
                "stages": [
                    decode,
                    {"name": "classify", "kind": "model", "model": CLASSIFIER},
                    {"name": "top5", **top5},
                ],
            },
        },
    }


def write(spec: SimSpec, folder: Path) -> Path:
    """The pipelines file of one turn, its device in `folder`/device; the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipelines.yaml"
    path.write_text(yaml.safe_dump(document(spec, folder / "device"), sort_keys=False))
    return path


def parse_costs(text: str) -> dict[str, Cost]:
    """`sim_detect=99,4.3;sim_classify=50,2` -> costs per model."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, numbers = part.partition("=")
        a, _, b = numbers.partition(",")
        if name.strip() not in (DETECTOR, CLASSIFIER) or not b:
            raise ValueError(f"expected {DETECTOR}=A,B;{CLASSIFIER}=A,B (ms), got {text!r}")
        out[name.strip()] = Cost(float(a), float(b))
    return out
