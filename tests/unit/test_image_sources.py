"""The decode stage reads `path` inputs itself, under its own data root, checked again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import ItemError
from tests.support.photos import photo_bytes
from workers.transforms.image import InputConfig, decode_resize_crop, load_image_bytes

CAT = photo_bytes("chelsea.png")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    (data / "photos" / "cat.jpg").write_bytes(CAT)
    (tmp_path / "secret.jpg").write_bytes(CAT)
    return data


def failure(inp: dict, config: InputConfig) -> str:
    with pytest.raises(ItemError) as info:
        load_image_bytes(inp, config)
    return str(info.value)


def test_a_path_input_is_read_from_under_the_root(root: Path) -> None:
    config = InputConfig(data_root=root)
    assert load_image_bytes({"path": "photos/cat.jpg"}, config) == CAT
    crop = decode_resize_crop({"image": load_image_bytes({"path": "photos/cat.jpg"}, config)})
    assert np.array_equal(crop, decode_resize_crop({"image": CAT}))


def test_the_worker_checks_the_path_again(root: Path) -> None:
    config = InputConfig(data_root=root)
    assert failure({"path": "../secret.jpg"}, config) == "path ../secret.jpg: outside the data root"
    (root / "photos" / "swapped.jpg").symlink_to(root.parent / "secret.jpg")
    assert failure({"path": "photos/swapped.jpg"}, config) == "path photos/swapped.jpg: outside the data root"
    assert "no such file" in failure({"path": "photos/gone.jpg"}, config)
    assert failure({"path": "photos"}, config) == "path photos: not a file"


def test_a_worker_without_a_root_refuses_paths(root: Path) -> None:
    message = failure({"path": "photos/cat.jpg"}, InputConfig(data_root=None))
    assert message == "path inputs are disabled: DLPIPE_DATA_ROOT is not set"


def test_a_file_over_the_cap_is_refused(root: Path) -> None:
    message = failure({"path": "photos/cat.jpg"}, InputConfig(data_root=root, max_bytes=len(CAT) - 1))
    assert message == f"path photos/cat.jpg: the file is larger than {len(CAT) - 1} bytes"
    assert (
        load_image_bytes({"path": "photos/cat.jpg"}, InputConfig(data_root=root, max_bytes=len(CAT))) == CAT
    )


def test_an_empty_file_is_an_empty_image(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    assert "empty (0 bytes)" in failure({"path": "empty.png"}, InputConfig(data_root=root))


@pytest.mark.parametrize("inp", [{"image_url": 5}, {"path": None}, {"other": "x"}])
def test_inputs_without_a_usable_reference_fail(inp: dict) -> None:
    assert "no image bytes, image_url or path" in failure(inp, InputConfig())
