"""How many cores this process may use, and how the stack's default processes share them.

Oversubscription is the first trap of a CPU pipeline, but the trap is a team of intra-op
threads, not processes: a model at 2 torch threads beside a busy preprocess process on 2 cores
ran at ~60% of its speed (../notes), because each of its forward passes waits for whichever of
its threads the OS has just handed to another process. Single-threaded processes suffer no such
straggler: the OS shares the cores among them in proportion to the work they have. So on a CPU
the defaults run the model as replicas, one torch thread each (`dlpipe worker model` starts
them), and let them soak up whatever the other stages leave: measured on 2 cores, two
single-threaded replicas beside the preprocess process, the API, Redis and the notifier gave
~32 jobs/s against ~27 for one replica (one thread or two) and ~30 for three.

- On a CPU: replicas = the cores (at most MAX_CPU_REPLICAS: each holds the runtime and the
  weights, a few hundred MB), one torch thread each, more when there are more cores than
  replicas; preprocess processes = a fifth of the cores (at least one): decoding a 1920x1080
  JPEG costs about a fifth of what EfficientNet-Lite0 does (`dlpipe bench`'s stage costs).
- With a GPU: one model worker (one process owns the device) with one thread to feed it; every
  core but two (that feeder, the API/Redis) preprocesses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

PREPROCESS_SHARE_CPU = 0.2  # of the cores, when the model runs on the CPU
MAX_CPU_REPLICAS = 8
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


@dataclass(frozen=True)
class CoreSplit:
    model_replicas: int  # model worker processes
    torch_threads: int  # intra-op threads of each
    preprocess: int  # preprocess processes


def split_cores(cores: int, gpu: bool) -> CoreSplit:
    """The default processes and threads for `cores` cores (see the module's text)."""
    if gpu:
        return CoreSplit(model_replicas=1, torch_threads=1, preprocess=max(1, cores - 2))
    preprocess = max(1, round(cores * PREPROCESS_SHARE_CPU))
    replicas = max(1, min(cores, MAX_CPU_REPLICAS))
    return CoreSplit(replicas, max(1, (cores - preprocess) // replicas), preprocess)


def gpu_expected(device: str | None) -> bool:
    """Whether the model worker will run on a GPU, without importing torch (the API and the
    preprocess processes never do): the device asked for, else an NVIDIA driver's device file."""
    if device:
        return device.startswith("cuda")
    return Path("/dev/nvidiactl").exists()
