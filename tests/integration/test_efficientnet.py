"""EfficientNet-Lite0 with its real ImageNet weights, end to end on real photos (CPU).

decode_resize_crop -> collate -> predict -> split -> top_k_labels, as the workers chain them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.photos import FHD, photo_bytes
from workers.models.efficientnet_lite import EfficientNetLite0, EfficientNetLite0Net, default_weights_path
from workers.transforms.image import decode_resize_crop
from workers.transforms.imagenet import top_k_labels

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    model = EfficientNetLite0()
    model.load(torch.device("cpu"))
    return model


def crop(name: str, fmt: str | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    return decode_resize_crop({"image": photo_bytes(name, fmt, size)})


def run(model: EfficientNetLite0, crops: list[np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        return model.split(model.predict(model.collate(crops)))


def classify(model: EfficientNetLite0, image: np.ndarray) -> dict:
    return top_k_labels(run(model, [image])[0], k=5)


def test_weights_load_strictly_into_the_architecture(model: EfficientNetLite0) -> None:
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    net = EfficientNetLite0Net()
    net.load_state_dict(state, strict=True)
    assert set(state) == set(net.state_dict())
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    assert sum(v.numel() for v in state.values()) == 4_694_073  # + BatchNorm running stats
    assert not model.net.training


def test_folding_the_batchnorms_keeps_the_outputs(model: EfficientNetLite0) -> None:
    """The served net has every BatchNorm folded into its convolution: same probabilities."""
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    unfolded = EfficientNetLite0Net()
    unfolded.load_state_dict(state, strict=True)
    unfolded.eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.modules()) == 49
    crops = [crop(name) for name in ("chelsea.png", "coffee.png")]
    batch = model.collate(crops)
    with torch.inference_mode():
        served = model.predict(batch)
        x = (batch.permute(0, 3, 1, 2).float() - 127.0) / 128.0
        reference = torch.softmax(unfolded(x), dim=1)
    torch.testing.assert_close(served, reference, atol=1e-5, rtol=0)


def test_a_state_dict_with_a_missing_tensor_is_refused(tmp_path: Path) -> None:
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    del state["_blocks.3._depthwise_conv.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        EfficientNetLite0(weights_path=str(path)).load(torch.device("cpu"))


def test_unknown_params_are_refused() -> None:
    with pytest.raises(TypeError):
        EfficientNetLite0(weight_path="typo.pth")  # type: ignore[call-arg]


def test_the_cat_photo_is_a_cat(model: EfficientNetLite0) -> None:
    labels = classify(model, crop("chelsea.png"))["labels"]
    assert labels[0]["index"] in CAT_CLASSES, labels
    # The top 3 are all cats, together well over half the probability.
    assert {item["index"] for item in labels[:3]} <= CAT_CLASSES, labels
    assert sum(item["score"] for item in labels if item["index"] in CAT_CLASSES) > 0.6


def test_the_coffee_photo_is_an_espresso(model: EfficientNetLite0) -> None:
    labels = classify(model, crop("coffee.png"))["labels"]
    assert labels[0]["index"] in COFFEE_CLASSES, labels
    assert labels[0]["score"] > 0.8


def test_reference_scores_pin_padding_and_normalisation(model: EfficientNetLite0) -> None:
    # Measured with TF 'same' padding and (x - 127) / 128. Symmetric padding puts Egyptian cat
    # first (0.35); ImageNet mean/std normalisation gives espresso 0.84.
    cat = {item["index"]: item["score"] for item in classify(model, crop("chelsea.png"))["labels"]}
    coffee = classify(model, crop("coffee.png"))["labels"][0]
    assert cat[282] == pytest.approx(0.3834, abs=0.01)
    assert cat[285] == pytest.approx(0.3698, abs=0.01)
    assert cat[281] == pytest.approx(0.1612, abs=0.01)
    assert coffee["index"] == 967 and coffee["score"] == pytest.approx(0.9567, abs=0.01)


def test_a_full_hd_jpeg_goes_through_draft_decoding_and_is_still_a_cat(model: EfficientNetLite0) -> None:
    labels = classify(model, crop("chelsea.png", "JPEG", FHD))["labels"]
    assert labels[0]["index"] in CAT_CLASSES, labels


def test_output_is_float32_probabilities(model: EfficientNetLite0) -> None:
    with torch.inference_mode():
        out = model.predict(model.collate([crop("coffee.png"), crop("motorcycle_left.png")]))
    assert out.shape == (2, 1000)
    assert out.dtype == torch.float32
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2), atol=1e-5, rtol=0)


def test_a_batch_gives_the_same_probabilities_as_one_by_one(model: EfficientNetLite0) -> None:
    crops = [crop(name) for name in ("chelsea.png", "coffee.png", "motorcycle_left.png", "astronaut.png")]
    batched = run(model, crops)
    single = [run(model, [c])[0] for c in crops]
    assert len(batched) == 4
    for one, many in zip(single, batched):
        np.testing.assert_allclose(many, one, atol=1e-4, rtol=0)
    # ...and the four rows are really different images, in order.
    assert len({int(np.argmax(row)) for row in batched}) == 4


def test_predict_checks_the_layout(model: EfficientNetLite0) -> None:
    with pytest.raises(ValueError, match="NHWC"):
        model.predict(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))


def test_predict_before_load_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before load"):
        EfficientNetLite0().predict(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))


def test_the_architecture_builds_without_weights() -> None:
    net = EfficientNetLite0Net().eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
