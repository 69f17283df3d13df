"""top_k_labels and the ImageNet class names it reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ItemError
from workers.transforms.imagenet import imagenet_labels, top_k_labels

REPO = Path(__file__).resolve().parents[2]


def probs_with(scores: dict[int, float]) -> np.ndarray:
    probs = np.zeros(1000, np.float32)
    for index, score in scores.items():
        probs[index] = score
    return probs


def test_the_class_names_are_the_imagenet_1k_list_in_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench"
    assert labels[281] == "tabby"
    assert labels[285] == "Egyptian cat"
    assert labels[967] == "espresso"
    assert labels[968] == "cup"
    assert labels[999] == "toilet tissue"
    assert all(label and label == label.strip() and "\t" not in label for label in labels)


def test_the_data_file_is_package_data_with_one_name_a_line() -> None:
    lines = (REPO / "workers" / "data" / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    assert tuple(lines) == imagenet_labels()


def test_best_first_with_index_label_and_score() -> None:
    result = top_k_labels(probs_with({285: 0.5, 281: 0.3, 282: 0.15, 967: 0.04, 0: 0.01}))
    assert result == {
        "labels": [
            {"index": 285, "label": "Egyptian cat", "score": 0.5},
            {"index": 281, "label": "tabby", "score": 0.3},
            {"index": 282, "label": "tiger cat", "score": 0.15},
            {"index": 967, "label": "espresso", "score": 0.04},
            {"index": 0, "label": "tench", "score": 0.01},
        ]
    }


@pytest.mark.parametrize("k", [1, 3, 10, 1000])
def test_k_labels_in_descending_order(k: int) -> None:
    probs = np.random.default_rng(k).dirichlet(np.ones(1000)).astype(np.float32)
    labels = top_k_labels(probs, k=k)["labels"]
    assert len(labels) == k
    assert [item["index"] for item in labels] == list(np.argsort(-probs, kind="stable")[:k])
    scores = [item["score"] for item in labels]
    assert scores == sorted(scores, reverse=True)


def test_scores_are_plain_floats_rounded_to_six_decimals_and_json_ready() -> None:
    result = top_k_labels(probs_with({5: 0.123456789, 6: 1 / 3}), k=2)
    first, second = result["labels"]
    assert type(first["index"]) is int and type(first["score"]) is float
    assert second["score"] == 0.123457
    assert first["score"] == 0.333333
    assert json.loads(json.dumps(result)) == result


def test_ties_keep_index_order() -> None:
    labels = top_k_labels(np.full(1000, 0.001, np.float32), k=3)["labels"]
    assert [item["index"] for item in labels] == [0, 1, 2]


@pytest.mark.parametrize(
    "probs",
    [np.zeros(999), np.zeros((1, 1000)), np.zeros((2, 1000)), np.array(0.5), np.full(1000, np.nan)],
)
def test_wrong_shapes_or_values_are_item_errors(probs: np.ndarray) -> None:
    with pytest.raises(ItemError):
        top_k_labels(probs)


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_k_out_of_range_is_a_config_error(k: int) -> None:
    with pytest.raises(ValueError, match="k must be between"):
        top_k_labels(probs_with({1: 1.0}), k=k)


def test_importing_the_module_reads_no_file() -> None:
    code = (
        "import pathlib\n"
        "opened = []\n"
        "real = pathlib.Path.read_text\n"
        "pathlib.Path.read_text = lambda self, *a, **k: opened.append(self) or real(self, *a, **k)\n"
        "import workers.transforms.imagenet as m\n"
        "assert m.imagenet_labels.cache_info().currsize == 0\n"
        "assert not [p for p in opened if p.name == 'imagenet_classes.txt'], opened\n"
        "m.top_k_labels(__import__('numpy').ones(1000) / 1000)\n"
        "assert [p for p in opened if p.name == 'imagenet_classes.txt']\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
