"""The project's own EfficientNet-Lite0 exported to every format the exported-model classes load.

What a team with its own model would do: export the network (here with its real ImageNet
weights, BatchNorms folded as the native model runs it) to a file, then point the pipelines
file at it. The graph exported is the network alone, without the native model's input
normalisation ((x - 127) / 128, in EfficientNetLite0.predict): the pipelines file gives it as
`mean: 127, std: 128`, so the params are what makes the exported model match the native one.

ONNX is exported with the TorchScript-based exporter (`dynamo=False`): it needs only the `onnx`
package, and is several times faster to run than the torch.export-based one (which also works
offline, with `onnxscript`, and gives the same numbers); the test suite exports on every run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.export import Dim

from workers.models.efficientnet_lite import (
    INPUT_MEAN,
    INPUT_SCALE,
    EfficientNetLite0Net,
    default_weights_path,
)

SIZE = 224
FORMATS = {
    "torchscript": ("model.ts", "workers.models.exported:TorchScriptModel"),
    "torch.export": ("model.pt2", "workers.models.exported:ExportedProgramModel"),
    "onnx": ("model.onnx", "workers.models.exported:OnnxModel"),
}
NORMALISATION = {"mean": INPUT_MEAN, "std": INPUT_SCALE}  # what the exported graph leaves out


def network() -> EfficientNetLite0Net:
    net = EfficientNetLite0Net()
    net.load_state_dict(
        torch.load(default_weights_path(), map_location="cpu", weights_only=True), strict=True
    )
    return net.eval().fold_batchnorms()


def export(fmt: str, folder: Path, net: EfficientNetLite0Net | None = None) -> Path:
    """The network in format `fmt` under `folder`, batch size dynamic, 224 x 224 NCHW float32 input."""
    net = net or network()
    path = folder / FORMATS[fmt][0]
    example = torch.zeros((2, 3, SIZE, SIZE))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing's notes on shape arithmetic; the legacy exporter's notice
        if fmt == "torchscript":
            torch.jit.trace(net, example, check_trace=False).save(str(path))
        elif fmt == "torch.export":
            program = torch.export.export(
                net, (example,), dynamic_shapes={"x": {0: Dim("batch", min=1, max=1024)}}
            )
            torch.export.save(program, str(path))
        elif fmt == "onnx":
            torch.onnx.export(
                net,
                (example,),
                str(path),
                dynamo=False,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
        else:
            raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return path
