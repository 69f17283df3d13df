"""Your own exported model, no Python: EfficientNet-Lite0 exported to TorchScript, torch.export
and ONNX (tests/support/exports.py), each served through a user's pipelines file that names only the
generic class, the file and its layout and normalisation, must label real photos as the native
model does: the same top 5, probabilities within 1e-4. The exported graphs leave the input
normalisation out, so the params' `mean`/`std` are what make them match (checked: without
them the labels differ). A wrong entry fails at load, and in `dlpipe check`, naming the field.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from services import cli
from shared.pipeline_spec import PipelinesConfig, load_pipelines, parse_pipelines
from shared.settings import Settings
from tests.support.exports import FORMATS, NORMALISATION, export
from tests.support.inprocess import run_pipeline
from tests.support.photos import photo_bytes
from workers.inference import load_models
from workers.models.exported import ExportedModel, ExportedProgramModel, OnnxModel, TorchScriptModel
from workers.models.exported_config import ExportedModelError

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png")
CLASSES: dict[str, type[ExportedModel]] = {
    "torchscript": TorchScriptModel,
    "torch.export": ExportedProgramModel,
    "onnx": OnnxModel,
}
LABELS = Path(__file__).resolve().parents[2] / "workers" / "data" / "imagenet_classes.txt"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported")
    for fmt in FORMATS:
        export(fmt, out)
    shutil.copy(LABELS, out / "labels.txt")
    return out


def users_file(folder: Path, fmt: str, **params: Any) -> dict[str, Any]:
    """A pipelines file as a user writes one: the generic class, the file, layout and normalisation."""
    filename, class_path = FORMATS[fmt]
    model = {
        "path": str(folder / filename),
        "input_size": [224, 224],
        "layout": "NCHW",
        "dtype": "float32",
        **NORMALISATION,
        "output": "softmax_top_k",
        "labels": str(folder / "labels.txt"),
        "k": 5,
        **params,
    }
    return {
        "models": {
            "mine": {
                "class": class_path,
                "params": model,
                "batching": {"max_batch_size": 8, "max_batch_delay_ms": 2},
            }
        },
        "pipelines": {
            "my-classify": {
                "input": "image",
                "stages": [
                    {
                        "name": "decode",
                        "kind": "preprocess",
                        "fn": "workers.transforms.image:decode_resize_crop",
                        "params": {"resize": 256, "crop": 224},
                    },
                    {"name": "classify", "kind": "model", "model": "mine"},
                    {"name": "result", "kind": "postprocess", "fn": "workers.transforms.outputs:result"},
                ],
            }
        },
    }


def classify(document: dict[str, Any]) -> list[dict[str, Any]]:
    config = parse_pipelines(document)
    models = load_models(config, None, torch.device("cpu"))
    return run_pipeline(config, models, "my-classify", [{"image": photo_bytes(p, fmt=None)} for p in PHOTOS])


@pytest.fixture(scope="module")
def native() -> list[dict[str, Any]]:
    config: PipelinesConfig = load_pipelines(Settings().pipelines_file)
    models = load_models(config, ["efficientnet_lite0"], torch.device("cpu"))
    return run_pipeline(
        config, models, "image-classify", [{"image": photo_bytes(p, fmt=None)} for p in PHOTOS]
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_an_exported_model_labels_photos_as_the_native_model_does(
    folder: Path, native: list[dict[str, Any]], fmt: str
) -> None:
    for photo, mine, theirs in zip(PHOTOS, classify(users_file(folder, fmt)), native, strict=True):
        assert [x["index"] for x in mine["labels"]] == [x["index"] for x in theirs["labels"]], photo
        assert [x["label"] for x in mine["labels"]] == [x["label"] for x in theirs["labels"]], photo
        np.testing.assert_allclose(
            [x["score"] for x in mine["labels"]],
            [x["score"] for x in theirs["labels"]],
            atol=1e-4,
            err_msg=photo,
        )


def test_the_normalisation_params_are_what_makes_it_match(folder: Path, native: list[dict[str, Any]]) -> None:
    unnormalised = classify(users_file(folder, "onnx", mean=0, std=1))
    assert [r["labels"][0]["index"] for r in unnormalised] != [r["labels"][0]["index"] for r in native]


def test_raw_output_gives_every_output_tensor_per_item(folder: Path, native: list[dict[str, Any]]) -> None:
    (result, *_) = classify(users_file(folder, "onnx", output="raw", labels=None))
    logits = np.array(result["outputs"]["logits"])  # the ONNX output's name, as exported
    assert logits.shape == (1000,)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for label in native[0]["labels"]:
        assert probs[label["index"]] == pytest.approx(label["score"], abs=1e-4)


def entry_error(folder: Path, fmt: str, **params: Any) -> ExportedModelError:
    """The error `dlpipe check` (Model.check: build, load on the CPU, one batch) meets for the entry."""
    model = users_file(folder, fmt, **params)["models"]["mine"]["params"]
    with pytest.raises(ExportedModelError) as raised:
        CLASSES[fmt].check(model)
    return raised.value


@pytest.mark.parametrize(
    ("fmt", "params", "field", "says"),
    [
        ("onnx", {"path": "/nonexistent/model.onnx"}, "path", "no such file"),
        ("onnx", {"input_size": 256}, "input_size", "the params give ['N', 3, 256, 256]"),
        (
            "torch.export",
            {"input_size": [256, 256]},
            "input_size",
            "refuses a float32 NCHW batch of shape (2, 3, 256, 256)",
        ),
        ("onnx", {"layout": "NHWC"}, "layout", "takes input of shape ['batch', 3, 224, 224]"),
        ("onnx", {"dtype": "float16"}, "dtype", "takes float32 input"),
        ("torchscript", {"output": "argmax"}, "output", "'raw' or 'softmax_top_k'"),
        ("torchscript", {"k": 2000}, "k", "more than the 1000 classes"),
        ("torchscript", {"colour": "RGB"}, "colour", "unknown param"),
        ("onnx", {"output": "raw"}, "labels", "only output: softmax_top_k reads a labels file"),
    ],
)
def test_a_wrong_entry_fails_at_load_naming_the_field(
    folder: Path, fmt: str, params: dict[str, Any], field: str, says: str
) -> None:
    error = entry_error(folder, fmt, **params)
    assert error.field == field and says in str(error), str(error)
    assert str(error).startswith(f"params.{field}: ")


def test_labels_that_do_not_match_the_models_classes_fail_at_load(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "ten.txt").write_text("\n".join(f"class {i}" for i in range(10)))
    error = entry_error(folder, "torchscript", labels=str(tmp_path / "ten.txt"))
    assert error.field == "labels" and "10 names" in str(error) and "1000 classes" in str(error)


def test_a_file_of_another_format_fails_naming_the_path(folder: Path) -> None:
    error = entry_error(folder, "onnx", path=str(folder / "model.pt2"))
    assert error.field == "path" and "cannot load" in str(error) and "as ONNX" in str(error)


def test_dlpipe_check_loads_the_entry_and_names_the_field(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(users_file(folder, "onnx")))
    bad.write_text(yaml.safe_dump(users_file(folder, "onnx", input_size=[299, 299])))
    assert cli.main(["check", "--pipelines-file", str(good)]) == 0
    assert "my-classify" in capsys.readouterr().out
    assert cli.main(["check", "--pipelines-file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"dlpipe check: {bad}: model 'mine': params.input_size: " in err, err
    assert cli.main(["check", "--no-import", "--pipelines-file", str(bad)]) == 0  # locates modules only


def test_onnx_runs_on_as_many_threads_as_torch_is_given(folder: Path) -> None:
    model = OnnxModel(**users_file(folder, "onnx")["models"]["mine"]["params"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.load(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert model.session.get_providers() == ["CPUExecutionProvider"]
