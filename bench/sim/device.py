"""The simulated accelerator: one device shared by every model process of a run.

A forward pass of n items holds the device for `a + b*n` ms: an exclusive fcntl.flock on the
run's lock file (so two model processes, as LitServe's workers or dlpipe's replicas, take turns,
as processes take turns on one GPU), then sleeps until its end time (the CPU, and the GIL, stay
free, as while a GPU runs kernels). While it still holds the lock it appends its busy interval
to the run's log file (one O_APPEND write per line: lines never mix), so the bench computes the
duty cycle and the batches from the device itself (busylog.py), not from what a server reports.
Times are time.monotonic(): one clock for every process of the machine.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

LOCK_FILE = "device.lock"
LOG_FILE = "busy.log"


class SimDevice:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._lock_fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        self._log_fd = os.open(folder / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._threads = threading.Lock()  # flock is per open file: threads of one process queue here

    def run(self, model: str, n: int, ms: float) -> tuple[float, float]:
        """Hold the device for `ms` (a batch of n of `model`); its (start, end)."""
        with self._threads:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                start = time.monotonic()
                end = start + ms / 1000.0
                while (left := end - time.monotonic()) > 0:
                    time.sleep(left)
                end = time.monotonic()
                os.write(self._log_fd, f"{start:.6f} {end:.6f} {model} {n} {os.getpid()}\n".encode())
                return start, end
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._lock_fd, self._log_fd):
            try:
                os.close(fd)
            except OSError:
                pass
