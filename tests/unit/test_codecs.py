"""The binary value codec: round trips, compactness, and clear errors on bad bytes."""

from __future__ import annotations

import numpy as np
import pytest

from shared import codecs


@pytest.mark.parametrize("dtype", sorted(codecs.ALLOWED_DTYPES))
def test_arrays_round_trip_with_dtype_and_shape(dtype: str) -> None:
    array = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    back = codecs.decode(codecs.encode(array))
    assert back.dtype == array.dtype and back.shape == (2, 3, 4)
    assert np.array_equal(back, array)


def test_an_image_costs_its_raw_bytes_plus_a_small_header() -> None:
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    blob = codecs.encode(image)
    assert len(blob) - image.nbytes < 64


def test_non_contiguous_and_zero_size_arrays() -> None:
    array = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    assert np.array_equal(codecs.decode(codecs.encode(array)), array)
    empty = np.zeros((0, 3), dtype=np.int64)
    assert codecs.decode(codecs.encode(empty)).shape == (0, 3)


def test_nested_values_round_trip() -> None:
    value = {
        "ids": np.array([1, 2, 3], dtype=np.int64),
        "raw": b"\x00\xff",
        "meta": {"name": "x", "n": 2},
        "crops": [np.ones((2, 2), dtype=np.uint8), {"box": [1, 2, 3, 4]}],
    }
    back = codecs.decode(codecs.encode(value))
    assert np.array_equal(back["ids"], value["ids"])
    assert back["raw"] == b"\x00\xff"
    assert back["meta"] == {"name": "x", "n": 2}
    assert np.array_equal(back["crops"][0], value["crops"][0]) and back["crops"][1] == {"box": [1, 2, 3, 4]}


def test_plain_json_values_travel_as_json() -> None:
    blob = codecs.encode({"labels": [{"index": 1, "score": 0.5}]})
    assert blob.startswith(b"J")
    assert codecs.decode(blob) == {"labels": [{"index": 1, "score": 0.5}]}


@pytest.mark.parametrize(
    "value",
    [object(), np.array([object()]), {1: np.zeros(1)}, float("nan")],
)
def test_values_that_cannot_travel_raise_codec_error(value: object) -> None:
    with pytest.raises(codecs.CodecError):
        codecs.encode(value)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"Z123",
        b"A",
        b"J{not json",
        codecs.encode(np.zeros((2, 2), dtype=np.float32))[:-1],  # payload too short
        b"A\x06object\x01" + (1).to_bytes(8, "little") + b"x",  # dtype not allowed
        b"D\x01\x00\x00\x00\x01\x00k" + (99).to_bytes(8, "little") + b"Jnull",  # runs past the end
        codecs.encode([np.zeros(1, dtype=np.uint8)]) + b"x",  # trailing bytes
    ],
)
def test_corrupt_bytes_raise_codec_error(blob: bytes) -> None:
    with pytest.raises(codecs.CodecError):
        codecs.decode(blob)
