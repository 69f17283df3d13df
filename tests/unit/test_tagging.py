"""image-tag's CPU stages on their own: the label sentence, several texts as one item, tag scoring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared import codecs
from shared.errors import ItemError
from workers.transforms.tagging import (
    DEFAULT_TAXONOMY,
    describe_labels,
    image_tags,
    label_text,
    score_tags,
)
from workers.transforms.text import tokenize, tokenize_texts

REPO = Path(__file__).resolve().parents[2]
CAT = {
    "labels": [
        {"index": 282, "label": "tiger cat", "score": 0.383438},
        {"index": 285, "label": "Egyptian cat", "score": 0.36978},
        {"index": 281, "label": "tabby", "score": 0.16123},
        {"index": 287, "label": "lynx", "score": 0.020777},
        {"index": 904, "label": "window screen", "score": 0.001133},
    ]
}
COFFEE = {
    "labels": [
        {"index": 967, "label": "espresso", "score": 0.956652},
        {"index": 968, "label": "cup", "score": 0.013636},
        {"index": 925, "label": "consomme", "score": 0.006907},
    ]
}


# -- the label sentence -----------------------------------------------------------------


def test_the_top_three_labels_make_one_sentence_with_articles() -> None:
    assert describe_labels(CAT["labels"]) == "a photo of a tiger cat, an Egyptian cat or a tabby"


def test_labels_under_min_score_are_left_out_but_never_the_best() -> None:
    assert describe_labels(COFFEE["labels"]) == "a photo of an espresso or a cup"
    assert describe_labels(COFFEE["labels"], min_score=0.5) == "a photo of an espresso"
    assert describe_labels(COFFEE["labels"], min_score=0.99) == "a photo of an espresso"
    assert describe_labels(COFFEE["labels"], min_score=0.0) == "a photo of an espresso, a cup or a consomme"


def test_k_and_the_template_shape_the_sentence() -> None:
    assert describe_labels(CAT["labels"], k=1, template="{}") == "a tiger cat"
    assert describe_labels(CAT["labels"], k=2, template="an image of {}.") == (
        "an image of a tiger cat or an Egyptian cat."
    )
    with pytest.raises(ValueError, match="k must"):
        describe_labels(CAT["labels"], k=0)
    with pytest.raises(ValueError, match="template"):
        describe_labels(CAT["labels"], template="a photo")


# -- several texts as one item ----------------------------------------------------------


def test_tokenize_texts_pads_rows_that_equal_single_tokenizations() -> None:
    texts = ["hi", "a somewhat longer sentence here", "ok then"]
    out = tokenize_texts(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    singles = [tokenize({"text": t})["input_ids"] for t in texts]
    longest = max(s.size for s in singles)
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape == (3, longest)
    for row, single in enumerate(singles):
        n = single.size
        assert ids[row, :n].tolist() == single.tolist() and (ids[row, n:] == 0).all()
        assert mask[row].tolist() == [1] * n + [0] * (longest - n)


def test_tokenize_texts_truncates_and_refuses_what_it_cannot_embed() -> None:
    out = tokenize_texts(["word " * 100, "hi"], max_length=8)
    assert out["input_ids"].shape == (2, 8) and out["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="no content"):
        tokenize_texts(["fine", "\x00\x01"])
    with pytest.raises(ValueError, match="non-empty list"):
        tokenize_texts([])
    with pytest.raises(ValueError, match="max_length"):
        tokenize_texts(["hi"], max_length=2)


def test_label_text_tokenizes_the_sentence_then_every_taxonomy_entry() -> None:
    taxonomy = ["animal", "vehicle", "food and drink"]
    out = label_text(CAT, taxonomy=taxonomy)
    texts = [
        "a photo of a tiger cat, an Egyptian cat or a tabby",
        "a photo of animal",
        "a photo of vehicle",
        "a photo of food and drink",
    ]
    assert out["input_ids"].shape[0] == 4
    for row, text in enumerate(texts):
        single = tokenize({"text": text})["input_ids"]
        assert out["input_ids"][row, : single.size].tolist() == single.tolist()
        assert int(out["attention_mask"][row].sum()) == single.size
    back = codecs.decode(codecs.encode(out))  # it travels through Redis to the model worker
    np.testing.assert_array_equal(back["input_ids"], out["input_ids"])
    np.testing.assert_array_equal(back["attention_mask"], out["attention_mask"])


def test_label_text_uses_the_default_taxonomy() -> None:
    assert label_text(CAT)["input_ids"].shape[0] == 1 + len(DEFAULT_TAXONOMY)
    required = {"animal", "vehicle", "food and drink", "person", "plant", "building", "electronic device"}
    assert required <= set(DEFAULT_TAXONOMY) and len(DEFAULT_TAXONOMY) <= 16


@pytest.mark.parametrize(
    "labels",
    [{}, {"labels": []}, {"labels": [{"label": "x"}]}, {"labels": [{"score": 0.5}]}, "tabby", None],
    ids=["no labels key", "empty", "no score", "no label", "a string", "none"],
)
def test_label_text_fails_the_item_without_labels(labels: object) -> None:
    with pytest.raises(ItemError):
        label_text(labels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "taxonomy",
    [[], "animal", ["animal", "animal"], ["animal", "  "], ["animal", 3]],
    ids=["empty", "a string", "duplicate", "blank", "not a string"],
)
def test_a_bad_taxonomy_is_refused(taxonomy: object) -> None:
    with pytest.raises(ValueError, match="taxonomy"):
        label_text(CAT, taxonomy=taxonomy)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="taxonomy"):
        score_tags(np.ones((2, 384), np.float32), taxonomy)  # type: ignore[arg-type]


# -- scoring with fake embeddings -------------------------------------------------------


def fake_embeddings(similarities: list[float], scale: float = 1.0) -> np.ndarray:
    """Row 0 = e0; row i+1 has cosine similarity similarities[i] with it (scaled: not unit length)."""
    rows = [np.eye(384, dtype=np.float32)[0]]
    for i, s in enumerate(similarities):
        v = np.zeros(384, np.float32)
        v[0], v[i + 1] = s, np.sqrt(1 - s * s)
        rows.append(v * scale)
    return np.stack(rows)


def test_tags_are_the_most_similar_entries_best_first() -> None:
    taxonomy = ["animal", "vehicle", "food and drink", "person"]
    result = image_tags(fake_embeddings([0.2, 0.9, -0.3, 0.5]), CAT, taxonomy=taxonomy, top_n=3)
    assert [t["tag"] for t in result["tags"]] == ["vehicle", "person", "animal"]
    assert [t["score"] for t in result["tags"]] == pytest.approx([0.9, 0.5, 0.2], abs=1e-6)
    assert result["labels"] == CAT["labels"]
    assert codecs.decode(codecs.encode(result)) == result  # plain JSON


def test_scores_are_cosine_similarities_whatever_the_vector_lengths() -> None:
    tags = score_tags(fake_embeddings([0.1, 0.7], scale=5.0), ["a", "b"])
    assert [t["tag"] for t in tags] == ["b", "a"]
    assert [t["score"] for t in tags] == pytest.approx([0.7, 0.1], abs=1e-6)


def test_top_n_defaults_to_three_and_may_exceed_the_taxonomy() -> None:
    assert len(image_tags(fake_embeddings([0.1] * 12), CAT)["tags"]) == 3
    assert len(image_tags(fake_embeddings([0.1, 0.2]), CAT, taxonomy=["a", "b"], top_n=10)["tags"]) == 2
    with pytest.raises(ValueError, match="top_n"):
        image_tags(fake_embeddings([0.1] * 12), CAT, top_n=0)


def test_ties_keep_taxonomy_order() -> None:
    tags = score_tags(fake_embeddings([0.5, 0.5, 0.5]), ["x", "y", "z"])
    assert [t["tag"] for t in tags] == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("embeddings", "fragment"),
    [
        (np.ones((3, 384), np.float32), "expected 5"),  # 2 rows for 4 entries: another taxonomy
        (np.ones(384, np.float32), "shape"),
        (np.ones((5, 383), np.float32), "shape"),
        (np.full((5, 384), np.nan, np.float32), "finite"),
        (np.ones((5, 384), np.int64), "finite"),
        (np.zeros((5, 384), np.float32), "zeros"),
    ],
    ids=["row count", "1-d", "width", "nan", "ints", "zeros"],
)
def test_embeddings_that_do_not_fit_fail_the_item(embeddings: np.ndarray, fragment: str) -> None:
    with pytest.raises(ItemError, match=fragment):
        image_tags(embeddings, CAT, taxonomy=["a", "b", "c", "d"])


def test_the_bundled_pipelines_cpu_stages_do_not_import_torch() -> None:
    """The preprocess workers must not import torch: image-tag's CPU stages run there."""
    code = (
        "import sys\n"
        "from shared.callables import resolve\n"
        "from shared.pipeline_spec import load_pipelines\n"
        "from shared.settings import Settings\n"
        "config = load_pipelines(Settings().pipelines_file)\n"
        "fns = [resolve(s.fn) for p in config.pipelines.values() for s in p.stages if s.fn]\n"
        "stages = [s.name for s in config.pipelines['image-tag'].stages]\n"
        "assert stages == ['decode', 'classify', 'labels', 'label_text', 'embed', 'tags'], stages\n"
        "from workers.transforms.tagging import label_text, image_tags\n"
        "import numpy as np\n"
        "label_text({'labels': [{'label': 'tabby', 'score': 0.9}]})\n"
        "image_tags(np.ones((13, 384), np.float32), {'labels': [{'label': 'tabby', 'score': 0.9}]})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
