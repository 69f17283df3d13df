"""face-detect with MTCNN's real weights, in-process: the bundled file's stages, in order (CPU).

The four photos run as one batch at every model stage, as the model worker would batch them:
four pyramids of four sizes through P-Net, a different number of crops per photo through
R-Net and O-Net (none, for some). The astronaut has one face (her head is at about x 160-260,
y 50-190 of the 512 x 512 photo: checked by eye), the cat, the espresso cup and the rocket none.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shared.pipeline_spec import PipelinesConfig
from tests.support.faces import HEAD, overlap
from tests.support.inprocess import run_stages
from tests.support.photos import photo_bytes
from workers.models import mtcnn
from workers.models.base import Model
from workers.models.faces import MtcnnONet, MtcnnPNet

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


@pytest.fixture(scope="module")
def stages(bundled_config: PipelinesConfig, mtcnn_nets: dict[str, Model]) -> dict[str, dict[str, Any]]:
    inputs = [{"image": photo_bytes(name, fmt=None)} for name in PHOTOS]
    return dict(zip(PHOTOS, run_stages(bundled_config, mtcnn_nets, "face-detect", inputs), strict=True))


def test_the_three_nets_load_strictly_without_importing_facenet_pytorch() -> None:
    for name, tensors in (("pnet", 13), ("rnet", 16), ("onet", 21)):
        state = torch.load(mtcnn.weights_dir() / mtcnn.WEIGHT_FILES[name], weights_only=True)
        assert len(state) == tensors
        net = mtcnn.NETS[name]()
        assert set(net.state_dict()) == set(state)  # strict: every tensor has a home, and back
        net.load_state_dict(state, strict=True)
    assert "facenet_pytorch" not in sys.modules  # its __init__ imports torchvision


def test_the_astronaut_has_one_face_over_her_head(stages: dict[str, dict[str, Any]]) -> None:
    result = stages["astronaut.png"]["faces"]
    assert len(result["faces"]) == 1, result
    (face,) = result["faces"]
    box = face["box"]
    assert overlap(box, HEAD) > 0.8, box  # the head's region is rough; the face is in it
    assert HEAD[0] < (box[0] + box[2]) / 2 < HEAD[2] and HEAD[1] < (box[1] + box[3]) / 2 < HEAD[3], box
    assert 60 < box[2] - box[0] < 120 and 80 < box[3] - box[1] < 140, box  # a head's size, not a patch
    assert face["score"] > 0.99
    assert result["boxes"] == [box]
    (left_eye, right_eye, nose, mouth_left, mouth_right) = face["landmarks"]
    for x, y in face["landmarks"]:
        assert box[0] < x < box[2] and box[1] < y < box[3]
    assert left_eye[0] < nose[0] < right_eye[0] and left_eye[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.parametrize("photo", ["chelsea.png", "coffee.png", "rocket.jpg"])
def test_no_face_where_there_is_none(stages: dict[str, dict[str, Any]], photo: str) -> None:
    assert stages[photo]["faces"] == {"faces": [], "boxes": []}


def test_each_stage_narrows_the_candidates(stages: dict[str, dict[str, Any]]) -> None:
    for photo, item in stages.items():
        counts = [len(item["candidates"]), len(item["refine"]), len(item["faces"]["faces"])]
        assert counts == sorted(counts, reverse=True), (photo, counts)
        assert len(item["crops24"]["crops"]) == counts[0] and len(item["rnet"]) == counts[0]
        assert len(item["crops48"]["crops"]) == counts[1] and len(item["onet"]) == counts[1]
    assert len(stages["astronaut.png"]["candidates"]) > 20  # P-Net proposes many; R-Net drops most
    assert len(stages["chelsea.png"]["refine"]) == 0  # so O-Net's batch held an item of no crops


def test_a_photo_alone_gets_what_it_gets_in_a_batch_of_four(
    bundled_config: PipelinesConfig, mtcnn_nets: dict[str, Model], stages: dict[str, dict[str, Any]]
) -> None:
    (alone,) = run_stages(
        bundled_config, mtcnn_nets, "face-detect", [{"image": photo_bytes("astronaut.png", fmt=None)}]
    )
    batched = stages["astronaut.png"]
    assert np.array_equal(alone["pnet"], batched["pnet"])  # same sizes, same forward passes
    np.testing.assert_allclose(alone["rnet"], batched["rnet"], atol=1e-4)  # rows among others' rows
    (face,) = alone["faces"]["faces"]
    assert face["box"] == pytest.approx(batched["faces"]["faces"][0]["box"], abs=0.2)


def test_same_sized_pyramids_share_their_forward_passes(stages: dict[str, dict[str, Any]]) -> None:
    pnet = MtcnnPNet()
    astronaut, cat = stages["astronaut.png"]["pyramid"], stages["chelsea.png"]["pyramid"]
    batch = pnet.collate([astronaut, cat, astronaut])
    groups = batch["levels"].groups
    assert len(groups) == len(astronaut["levels"]) + len(cat["levels"])  # one pass per distinct size
    assert sorted(len(g) for g in groups)[-1] == 2  # the astronaut's levels ran twice in one pass each
    with pytest.raises(ValueError, match="item 1: a pyramid needs one scale per level"):
        pnet.collate([astronaut, {"levels": astronaut["levels"], "scales": []}])


def test_a_batch_whose_items_hold_no_crops_runs(mtcnn_nets: dict[str, Model]) -> None:
    onet = mtcnn_nets["mtcnn_onet"]
    assert isinstance(onet, MtcnnONet)
    empty = {"crops": np.zeros((0, 48, 48, 3), np.uint8)}
    with torch.inference_mode():
        rows = onet.split(onet.predict(onet.collate([empty, empty])))
    assert [r.shape for r in rows] == [(0, 15), (0, 15)]
    with pytest.raises(ValueError, match=r"item 0: rows of shape \(24, 24, 3\)"):
        onet.collate([{"crops": np.zeros((1, 24, 24, 3), np.uint8)}])


def test_images_too_small_or_too_plain_for_a_face_get_none(
    bundled_config: PipelinesConfig, mtcnn_nets: dict[str, Model]
) -> None:
    def png(size: tuple[int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size, (128, 128, 128)).save(out, "PNG")
        return out.getvalue()

    # 10 x 10: no pyramid level at all (under P-Net's window); 64 x 48 grey: levels, no cell
    items = run_stages(
        bundled_config, mtcnn_nets, "face-detect", [{"image": png((10, 10))}, {"image": png((64, 48))}]
    )
    assert [len(item["pyramid"]["levels"]) for item in items][0] == 0
    assert [item["faces"] for item in items] == [{"faces": [], "boxes": []}] * 2
