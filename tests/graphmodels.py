"""A tiny model for the graph-pipeline tests: doubles its input and reports its batch size."""

from __future__ import annotations

import torch

from workers.models.base import Model


class Doubler(Model):
    def load(self, device: torch.device) -> None:
        self.device = device

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        out = batch.float() * 2
        out[:, 1] = batch.shape[0]  # the second value says how many items shared the batch
        return out
