"""The simulated models: what they compute is real and cheap (a few tensor ops on the CPU, tens
of microseconds); what they cost is the simulated device's time (device.py), `a_ms + b_ms * n`
per batch of n, during which the CPU is free.

- SimDetector ("model A"): the box around the brightest part of a 224x224 crop, as fractions
  [x0, y0, x1, y1] of the image (an intensity-weighted centroid, half the image wide);
- SimClassifier ("model B"): 1000 class probabilities of a 224x224 crop (a fixed random
  projection of its 4x4 mean colours, softmaxed), for the same top-5 postprocess as
  image-classify.

Params (from the run's pipelines file, pipelines.py): `device` (the device folder, shared by every
model process of the run), `a_ms`, `b_ms`, and `name` (for the device's log).
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.sim.device import SimDevice
from workers.models.base import Model

CLASSES = 1000


class SimModel(Model):
    def load(self, device: torch.device) -> None:
        self.device = device
        self.sim = SimDevice(Path(self.params["device"]))
        self.name = str(self.params["name"])
        self.a_ms = float(self.params["a_ms"])
        self.b_ms = float(self.params["b_ms"])

    def cost_ms(self, n: int) -> float:
        return self.a_ms + self.b_ms * n

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.compute(batch)
        self.sim.run(self.name, batch.shape[0], self.cost_ms(batch.shape[0]))
        return out

    def compute(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SimDetector(SimModel):
    def compute(self, batch: torch.Tensor) -> torch.Tensor:
        small = batch[:, ::8, ::8, :].float().mean(dim=3)  # (n, 28, 28) brightness
        weights = small / small.sum(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        grid = (torch.arange(small.shape[1], dtype=torch.float32) + 0.5) / small.shape[1]
        cy = (weights.sum(dim=2) * grid).sum(dim=1)
        cx = (weights.sum(dim=1) * grid).sum(dim=1)
        x0, y0 = (cx - 0.25).clamp(0.0, 0.5), (cy - 0.25).clamp(0.0, 0.5)
        return torch.stack([x0, y0, x0 + 0.5, y0 + 0.5], dim=1)


class SimClassifier(SimModel):
    def load(self, device: torch.device) -> None:
        super().load(device)
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(48, CLASSES, generator=generator) * 4.0

    def compute(self, batch: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = batch.shape
        pooled = batch.float().reshape(n, 4, h // 4, 4, w // 4, 3).mean(dim=(2, 4)).reshape(n, 48)
        return torch.softmax((pooled / 255.0 - 0.5) @ self.projection, dim=1)
