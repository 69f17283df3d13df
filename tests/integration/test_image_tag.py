"""image-tag with the real models, in-process: the bundled pipelines file's stages, in order (CPU).

decode -> classify (EfficientNet-Lite0) -> labels -> label_text -> embed (MiniLM) -> tags, each
stage's function and params as shared/pipelines.yaml gives them, every value through the
codec between stages as Redis carries it, the photos batched together at the model stages.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from shared.pipeline_spec import PipelinesConfig, load_pipelines
from shared.settings import Settings
from tests.support.inprocess import run_pipeline
from tests.support.photos import photo_bytes
from workers.inference import load_models
from workers.models.base import Model

PHOTOS = {"chelsea.png": "animal", "motorcycle_left.png": "vehicle", "coffee.png": "food and drink"}


@pytest.fixture(scope="module")
def config() -> PipelinesConfig:
    return load_pipelines(Settings().pipelines_file)


@pytest.fixture(scope="module")
def models(config: PipelinesConfig) -> dict[str, Model]:
    return load_models(config, ["efficientnet_lite0", "minilm_l6"], torch.device("cpu"))


@pytest.fixture(scope="module")
def results(config: PipelinesConfig, models: dict[str, Model]) -> dict[str, dict[str, Any]]:
    images = [{"image": photo_bytes(name, fmt=None)} for name in PHOTOS]
    return dict(zip(PHOTOS, run_pipeline(config, models, "image-tag", images), strict=True))


@pytest.mark.parametrize(("photo", "tag"), list(PHOTOS.items()))
def test_the_photo_gets_its_tag_first(results: dict[str, dict[str, Any]], photo: str, tag: str) -> None:
    tags = results[photo]["tags"]
    assert tags[0]["tag"] == tag, tags
    assert tags[0]["score"] > tags[1]["score"] + 0.05, tags  # clearly first, not by a hair


def test_tags_are_the_top_three_by_score_and_labels_are_image_classifys(
    config: PipelinesConfig, models: dict[str, Model], results: dict[str, dict[str, Any]]
) -> None:
    images = [{"image": photo_bytes(name, fmt=None)} for name in PHOTOS]
    classified = run_pipeline(config, models, "image-classify", images)
    for (photo, result), expected in zip(results.items(), classified, strict=True):
        assert set(result) == {"tags", "labels"}
        scores = [t["score"] for t in result["tags"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert -1 <= min(scores) <= max(scores) <= 1
        assert len({t["tag"] for t in result["tags"]}) == 3
        assert result["labels"] == expected["labels"], photo


def test_the_taxonomy_rows_are_computed_once_for_all_items(
    config: PipelinesConfig, models: dict[str, Model], results: dict[str, dict[str, Any]]
) -> None:
    taxonomy = config.pipelines["image-tag"].stage("label_text").params["taxonomy"]
    assert taxonomy == config.pipelines["image-tag"].stage("tags").params["taxonomy"]
    # The photos ran in one MiniLM batch: their label texts and the taxonomy's texts once, not
    # (1 + taxonomy) per photo. (image-classify, which also ran, does not use MiniLM.)
    assert models["minilm_l6"].computed_rows == len(PHOTOS) + len(taxonomy)  # type: ignore[attr-defined]
