"""What a model is to dlpipe: a class with load(device) and predict(batch).

The model worker builds the class with the `params` of its entry in the pipelines file,
calls `load(device)` once, then for each batch:

    batch = model.collate(values)   # values: one decoded stage value per item (numpy arrays, dicts...)
    batch = <moved to the device>   # a tensor, or a dict of tensors (pinned + non_blocking on CUDA);
                                    # a dict's other values (e.g. how to regroup rows) pass as they are
    out = model.predict(batch)      # under torch.inference_mode()
    rows = model.split(out)         # one value per item, in order; each travels to the next stage

Images arrive as uint8 HxWx3; normalising them is the model's job, on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Model:
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.device = torch.device("cpu")

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """What `dlpipe check` runs for an entry of this class, with no worker: build it with the
        entry's params (one the class does not take is a TypeError). A class whose entries can be
        checked further without a device overrides it (the exported models load their file on
        the CPU and try it on one batch)."""
        cls(**params)

    def load(self, device: torch.device) -> None:
        """Build the network, load its weights (no hub downloads), move it to `device`, eval()."""
        raise NotImplementedError

    def collate(self, values: list[Any]) -> torch.Tensor | dict[str, torch.Tensor]:
        """Stack same-shaped arrays into one CPU tensor. Override for padding, dicts, etc."""
        return torch.from_numpy(np.stack(values))

    def predict(self, batch: Any) -> Any:
        """Run the batch (already on the device); return a tensor whose first dim is the batch
        (or whatever this model's split() takes)."""
        raise NotImplementedError

    def split(self, output: Any) -> list[Any]:
        """One value per item, as numpy (the default: the rows of a tensor)."""
        return list(output.detach().to("cpu").numpy())
