"""How many cores this process may use, and how the stack's default threads split them.

Oversubscription is the first trap of a CPU pipeline: a model at 2 torch threads beside a busy
preprocess process on 2 cores ran at ~60% of its speed (../notes: 31 -> 18 jobs/s). So the
defaults give each busy thread of the stack a core of its own: the preprocess processes (one
thread each), the model worker's torch threads, and one core left for the API, Redis and the
notifier (which are mostly waiting on I/O).

- On a CPU the model is most of a job's work: EfficientNet-Lite0 costs ~4x what decoding a
  1920x1080 JPEG does (`dlpipe bench`'s stage costs), so about a fifth of the cores preprocess
  (at least one) and the model takes the rest.
- With a GPU the model worker needs one thread to feed the device, and the CPU stages are the
  work: every core but two (model worker, API/Redis) preprocesses.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PREPROCESS_SHARE_CPU = 0.2  # of the cores, when the model runs on the CPU
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def available_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may run on (its affinity), fewer if a CPU quota (a container's
    `--cpus`, compose's `cpus:`) allows less than that; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def split_cores(cores: int, gpu: bool) -> tuple[int, int]:
    """(torch threads of the model worker, preprocess processes) for `cores` cores."""
    if gpu:
        return 1, max(1, cores - 2)
    preprocess = max(1, round(cores * PREPROCESS_SHARE_CPU))
    return max(1, cores - preprocess - 1), preprocess


def gpu_expected(device: str | None) -> bool:
    """Whether the model worker will run on a GPU, without importing torch (the API and the
    preprocess processes never do): the device asked for, else an NVIDIA driver's device file."""
    if device:
        return device.startswith("cuda")
    return Path("/dev/nvidiactl").exists()
