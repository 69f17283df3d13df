"""workers/transforms/text.py and MiniLM.collate on their own (the tokenizer file, no weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared import codecs
from shared.errors import ItemError
from workers.models.minilm import MiniLM
from workers.transforms.text import embedding_result, load_tokenizer, tokenize

CLS, SEP = 101, 102


def test_a_sentence_becomes_cls_wordpieces_sep_with_a_full_mask() -> None:
    out = tokenize({"text": "Hello, world!"})
    assert set(out) == {"input_ids", "attention_mask"}
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.ndim == 1
    # bert-base-uncased WordPiece: hello , world !
    assert ids.tolist() == [CLS, 7592, 1010, 2088, 999, SEP]
    assert mask.tolist() == [1] * 6


def test_lowercasing_and_no_padding_to_the_files_fixed_128() -> None:
    # tokenizer.json ships with padding to 128 and truncation at 128 on; neither may apply.
    upper, lower = tokenize({"text": "HELLO"}), tokenize({"text": "hello"})
    assert upper["input_ids"].tolist() == lower["input_ids"].tolist()
    assert tokenize({"text": "hi"})["input_ids"].size == 3


@pytest.mark.parametrize("max_length", [8, 128, 256])
def test_long_texts_are_truncated_to_max_length_ending_in_sep(max_length: int) -> None:
    out = tokenize({"text": "word " * 400}, max_length=max_length)
    ids = out["input_ids"]
    assert ids.size == max_length and out["attention_mask"].size == max_length
    assert ids[0] == CLS and ids[-1] == SEP and (ids[1:-1] == 2773).all()  # "word"


def test_the_tokenizer_is_loaded_once_per_file_and_length() -> None:
    load_tokenizer.cache_clear()
    tokenize({"text": "a"})
    tokenize({"text": "b"})
    tokenize({"text": "c"}, max_length=16)
    info = load_tokenizer.cache_info()
    assert info.misses == 2 and info.hits == 1


def test_the_output_survives_the_codec() -> None:
    out = tokenize({"text": "naïve café 🙂 日本"})
    back = codecs.decode(codecs.encode(out))
    assert back.keys() == out.keys()
    for key in out:
        np.testing.assert_array_equal(back[key], out[key])


@pytest.mark.parametrize(
    ("inp", "fragment"),
    [
        ({"text": ""}, "empty"),
        ({"text": "   \n\t "}, "empty"),
        ({"text": 5}, "got int"),
        ({"text": None}, "got NoneType"),
        ({"image": b"x"}, "no text"),
        ("just a string", "no text"),
        ({"text": "x" * 11}, "11 characters, over the 10 character cap"),
        ({"text": "ab\ud800cd"}, "lone surrogate"),
        ({"text": "\x00\x01\x02"}, "no content"),
    ],
)
def test_bad_texts_fail_the_item_with_a_reason(inp: object, fragment: str) -> None:
    with pytest.raises(ItemError, match=fragment):
        tokenize(inp, max_chars=10)  # type: ignore[arg-type]


def test_max_length_must_leave_room_for_a_token() -> None:
    with pytest.raises(ValueError, match="max_length"):
        tokenize({"text": "hi"}, max_length=2)


def test_embedding_result_is_384_python_floats() -> None:
    vec = np.linspace(-1, 1, 384, dtype=np.float32)
    out = embedding_result(vec)
    assert out["dim"] == 384 and len(out["embedding"]) == 384
    assert all(type(x) is float for x in out["embedding"])
    np.testing.assert_array_equal(np.asarray(out["embedding"], dtype=np.float32), vec)
    assert codecs.decode(codecs.encode(out)) == out  # plain JSON


@pytest.mark.parametrize(
    "vec",
    [
        np.zeros(383, np.float32),
        np.zeros((1, 384), np.float32),
        np.full(384, np.nan, np.float32),
        np.zeros(384, np.int64),
    ],
    ids=["short", "2-d", "nan", "ints"],
)
def test_embedding_result_refuses_what_is_not_an_embedding(vec: np.ndarray) -> None:
    with pytest.raises(ItemError):
        embedding_result(vec)


def test_collate_pads_to_the_longest_with_zeros() -> None:
    items = [tokenize({"text": t}) for t in ("hi", "a somewhat longer sentence here", "ok then")]
    batch = MiniLM().collate(items)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    longest = max(item["input_ids"].size for item in items)
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert ids.shape == mask.shape == (3, longest)
    for row, item in enumerate(items):
        n = item["input_ids"].size
        assert ids[row, :n].tolist() == item["input_ids"].tolist()
        assert mask[row, :n].tolist() == [1] * n
        assert (ids[row, n:] == 0).all() and (mask[row, n:] == 0).all()


def test_collate_of_one_item_has_no_padding() -> None:
    item = tokenize({"text": "just one"})
    batch = MiniLM().collate([item])
    assert batch["input_ids"].shape == (1, item["input_ids"].size) and bool(batch["attention_mask"].all())


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.zeros(3, np.int32), "expected"),
        ({"input_ids": np.array([101, 102]), "attention_mask": np.array([1])}, "must be equal"),
        ({"input_ids": np.array([101, 99999]), "attention_mask": np.array([1, 1])}, "vocabulary"),
        ({"input_ids": np.array([101.0, 102.0]), "attention_mask": np.array([1, 1])}, "integers"),
        ({"input_ids": np.array([101, 102]), "attention_mask": np.array([0, 0])}, "no real token"),
        ({"input_ids": np.full(300, 7), "attention_mask": np.ones(300, np.int64)}, "max_seq_length"),
    ],
)
def test_collate_refuses_malformed_items(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        MiniLM(max_seq_length=256).collate([value])
