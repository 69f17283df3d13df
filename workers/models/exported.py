"""Your own exported model, no Python: model classes configured entirely from the pipelines file.

    TorchScriptModel     a `torch.jit.save`d file (torch.jit.load)
    ExportedProgramModel a `torch.export.save`d program, `.pt2` (torch.export.load)
    OnnxModel            an ONNX file (onnxruntime: CUDA's execution provider when the model
                         worker runs on a GPU and onnxruntime has it, the CPU's otherwise)

Each takes the same params (workers/models/exported_config.py): the file, the layout and dtype
the model takes, its normalisation, and what to make of its output. Images arrive as uint8
NHWC batches; `predict` turns them into the model's input on the device (layout, dtype,
x * scale, (x - mean) / std), runs the file, and either gives every output tensor back per
item (`raw`) or a softmax over its classes, ranked with the labels file's names
(`softmax_top_k`: the same {"labels": [...]} image-classify gives).

`load` tries the model on one batch of two `input_size` images, so a file that refuses that
input (another size, a fixed batch of one, another layout), or whose class count does not
match the labels, fails when the worker starts, and in `dlpipe check` (`Model.check`), naming
the field, rather than on the first job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.models.base import Model
from workers.models.exported_config import ExportedConfig, ExportedModelError, parse_config
from workers.transforms.labels import ranked_labels

log = logging.getLogger(__name__)

CHECK_BATCH = 2  # images in the batch `load` tries: a model that takes only one fails at load


class ExportedModel(Model):
    """What every format shares: params, input preparation, the load-time check, the outputs.
    A format implements `_open(path, device)` and `_run(x) -> {output name: tensor}`."""

    format = ""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.config: ExportedConfig
        self.config, self.labels = parse_config(params)

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """`dlpipe check`: the params, then the file loaded on the CPU and tried on one batch."""
        cls(**params).load(torch.device("cpu"))

    def load(self, device: torch.device) -> None:
        self.device = torch.device(device)
        path = Path(self.config.path)
        try:
            self._open(path, self.device)
        except ExportedModelError:
            raise
        except Exception as exc:
            raise ExportedModelError(
                "path", f"cannot load {path} as {self.format}: {type(exc).__name__}: {exc}"
            ) from None
        self._check_batch()
        log.info("loaded %s model %s on %s (%s)", self.format, path, self.device, self.config.output)

    def _check_batch(self) -> None:
        height, width = self.config.input_size
        dummy = torch.zeros((CHECK_BATCH, height, width, 3), dtype=torch.uint8, device=self.device)
        try:
            with torch.inference_mode():
                outputs = self._run(self._prepare(dummy))
        except Exception as exc:
            shape = tuple(self._prepare(dummy).shape)
            raise ExportedModelError(
                "input_size",
                f"the model refuses a {self.config.dtype} {self.config.layout} batch of shape {shape} "
                f"({type(exc).__name__}: {str(exc).strip()[:300]}); its input size, layout or dtype "
                "is another, or it takes a fixed batch (export it with a dynamic batch dimension)",
            ) from None
        for name, tensor in outputs.items():
            if tensor.dim() == 0 or tensor.shape[0] != CHECK_BATCH:
                raise ExportedModelError(
                    "path", f"output {name!r} of shape {tuple(tensor.shape)} is not one row per image"
                )
        if self.labels is not None:
            if len(outputs) != 1 or next(iter(outputs.values())).dim() != 2:
                shapes = {name: tuple(t.shape) for name, t in outputs.items()}
                raise ExportedModelError(
                    "output", f"softmax_top_k needs one output [N, classes], got {shapes}"
                )
            classes = next(iter(outputs.values())).shape[1]
            if classes != len(self.labels):
                raise ExportedModelError(
                    "labels",
                    f"{len(self.labels)} names in {self.config.labels} for the model's {classes} classes",
                )

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC images -> the model's input: layout, dtype, x * scale, (x - mean) / std."""
        if batch.dim() != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
            raise ValueError(
                f"expected a uint8 NHWC batch (N, H, W, 3), got {batch.dtype} {tuple(batch.shape)}"
            )
        config = self.config
        x = batch.permute(0, 3, 1, 2) if config.layout == "NCHW" else batch
        if config.dtype == "uint8":
            return x.contiguous()
        channel_shape = (1, 3, 1, 1) if config.layout == "NCHW" else (1, 1, 1, 3)
        mean = torch.tensor(config.mean, device=x.device).reshape(channel_shape)
        std = torch.tensor(config.std, device=x.device).reshape(channel_shape)
        x = (x.float() * config.scale - mean) / std
        return x.to(getattr(torch, config.dtype)).contiguous()

    def predict(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self._run(self._prepare(batch))
        if self.labels is not None:
            (logits,) = outputs.values()
            return {"probs": torch.softmax(logits.float(), dim=1)}
        return outputs

    def split(self, output: dict[str, torch.Tensor]) -> list[Any]:
        arrays = {name: tensor.detach().to("cpu").numpy() for name, tensor in output.items()}
        n = len(next(iter(arrays.values())))
        if self.labels is not None:
            return [ranked_labels(row, self.labels, self.config.k) for row in arrays["probs"]]
        return [{"outputs": {name: array[i] for name, array in arrays.items()}} for i in range(n)]

    # -- the formats ----------------------------------------------------------------------

    def _open(self, path: Path, device: torch.device) -> None:
        raise NotImplementedError

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _named(output: Any) -> dict[str, torch.Tensor]:
    """A torch module's output as named tensors: `output`, or `output_<i>` / the dict's keys."""
    if isinstance(output, torch.Tensor):
        return {"output": output}
    if isinstance(output, dict):
        return {str(name): tensor for name, tensor in output.items()}
    if isinstance(output, (list, tuple)):
        return {f"output_{i}": tensor for i, tensor in enumerate(output)}
    raise TypeError(f"the model returned a {type(output).__name__}, not tensors")


class TorchScriptModel(ExportedModel):
    """A TorchScript file (`torch.jit.trace(...)` or `torch.jit.script(...)`, then `.save(path)`)."""

    format = "TorchScript"

    def _open(self, path: Path, device: torch.device) -> None:
        self.module = torch.jit.load(str(path), map_location=device).eval()

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return _named(self.module(x))


class ExportedProgramModel(ExportedModel):
    """A `torch.export` program saved with `torch.export.save(program, "model.pt2")`."""

    format = "torch.export"

    def _open(self, path: Path, device: torch.device) -> None:
        program = torch.export.load(str(path))
        self.module = program.module().to(device)

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return _named(self.module(x))


class OnnxModel(ExportedModel):
    """An ONNX file, run by onnxruntime with as many threads as the worker gives torch."""

    format = "ONNX"

    def _open(self, path: Path, device: torch.device) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - only the ONNX format needs it

        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                log.warning(
                    "onnxruntime has no CUDA execution provider (onnxruntime-gpu): %s runs on the CPU", path
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(
                f"the model takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); an image model takes one"
            )
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._check_declared(inputs[0].type, inputs[0].shape)
        log.info("ONNX model %s on %s", path, self.session.get_providers()[0])

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(self.output_names, {self.input_name: x.detach().cpu().numpy()})
        return {
            name: torch.from_numpy(np.asarray(out))
            for name, out in zip(self.output_names, outputs, strict=True)
        }

    def _check_declared(self, onnx_type: str, shape: list[Any]) -> None:
        """The input's declared dtype and fixed sides against the params, before any batch runs."""
        declared = _ONNX_TYPES.get(onnx_type, onnx_type)
        if declared != self.config.dtype:
            raise ExportedModelError(
                "dtype", f"the model takes {declared} input, the params say {self.config.dtype}"
            )
        if len(shape) != 4:
            raise ExportedModelError(
                "path", f"the model's input has {len(shape)} dimensions; an image batch has 4"
            )
        height, width = self.config.input_size
        expected = [3, height, width] if self.config.layout == "NCHW" else [height, width, 3]
        fixed = [(got, want) for got, want in zip(shape[1:], expected, strict=True) if isinstance(got, int)]
        if any(got != want for got, want in fixed):
            field = "layout" if 3 in shape[1:] and shape[1:].index(3) != expected.index(3) else "input_size"
            raise ExportedModelError(
                field,
                f"the model takes input of shape {shape}, the params give {['N', *expected]} ({self.config.layout})",
            )


_ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}
