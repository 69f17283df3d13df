"""The default split of a machine's cores between the model's threads and the preprocess processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.cores import available_cores, gpu_expected, split_cores
from shared.settings import Settings


@pytest.mark.parametrize(
    ("cores", "gpu", "expected"),
    [  # (model replicas, torch threads each, preprocess processes)
        (1, False, (1, 1, 1)),
        (2, False, (2, 1, 1)),  # this machine: measured best (see shared/cores.py)
        (4, False, (4, 1, 1)),
        (8, False, (8, 1, 2)),
        (16, False, (8, 1, 3)),
        (32, False, (8, 3, 6)),
        (2, True, (1, 1, 1)),
        (8, True, (1, 1, 6)),
        (32, True, (1, 1, 30)),
    ],
)
def test_split_cores(cores: int, gpu: bool, expected: tuple[int, int, int]) -> None:
    split = split_cores(cores, gpu)
    assert (split.model_replicas, split.torch_threads, split.preprocess) == expected
    # Never a team of torch threads bigger than the cores the model's replicas do not need.
    assert split.model_replicas * split.torch_threads <= max(cores, split.model_replicas)


def test_a_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # --cpus 1.5
    assert available_cores(cpu_max) == min(2, available_cores(tmp_path / "none"))
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == available_cores(tmp_path / "none") >= 1


def test_gpu_expected_from_the_device_setting() -> None:
    assert gpu_expected("cuda:1") and not gpu_expected("cpu")


def test_settings_take_the_split_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.settings.workers.available_cores", lambda: 16)
    s = Settings(device="cpu")
    assert (s.model_replicas, s.torch_threads, s.preprocess_concurrency) == (8, 1, 3)
    s = Settings(device="cuda")
    assert (s.model_replicas, s.torch_threads, s.preprocess_concurrency) == (1, 1, 14)
    monkeypatch.setenv("DLPIPE_TORCH_THREADS", "4")
    assert Settings(device="cpu").torch_threads == 4
