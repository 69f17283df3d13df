"""shared/datapaths.py: `path` inputs stay under the data root, folders list their images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared import datapaths
from shared.datapaths import PathRefused, list_images, read_file, resolve_under


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """<tmp>/root/{photos/{b.jpg,a.PNG,c.txt,.hidden.jpg,sub/d.jpg},top.jpg} and <tmp>/secret.jpg outside."""
    root = tmp_path / "root"
    (root / "photos" / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "c.txt", ".hidden.jpg", "sub/d.jpg"):
        (root / "photos" / name).write_bytes(b"img:" + name.encode())
    (root / "top.jpg").write_bytes(b"top")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    return root


def test_files_and_folders_under_the_root_resolve_to_their_relative_path(tree: Path) -> None:
    full, rel = resolve_under(tree, "photos/b.jpg")
    assert full == (tree / "photos" / "b.jpg").resolve() and rel == "photos/b.jpg"
    assert resolve_under(tree, "photos")[1] == "photos"
    assert resolve_under(tree, "photos/")[1] == "photos"
    assert resolve_under(tree, "./photos/sub/../b.jpg")[1] == "photos/b.jpg"  # `..` that stays inside
    assert resolve_under(tree, str(tree / "top.jpg"))[1] == "top.jpg"  # absolute, under the root
    assert resolve_under(tree, ".")[1] == "."


@pytest.mark.parametrize("value", ["../secret.jpg", "photos/../../secret.jpg", "..", "/etc/passwd", "/"])
def test_paths_out_of_the_root_are_refused(tree: Path, value: str) -> None:
    with pytest.raises(PathRefused, match="^outside the data root$"):
        resolve_under(tree, value)


def test_symlinks_that_lead_out_are_refused_and_ones_that_stay_in_are_followed(tree: Path) -> None:
    (tree / "escape.jpg").symlink_to(tree.parent / "secret.jpg")
    (tree / "escape-dir").symlink_to(tree.parent)
    (tree / "inside.jpg").symlink_to(tree / "top.jpg")
    with pytest.raises(PathRefused, match="outside the data root"):
        resolve_under(tree, "escape.jpg")
    with pytest.raises(PathRefused, match="outside the data root"):
        resolve_under(tree, "escape-dir/secret.jpg")
    assert resolve_under(tree, "inside.jpg")[1] == "top.jpg"


def test_a_root_reached_through_a_symlink_still_contains_its_files(tree: Path) -> None:
    link = tree.parent / "root-link"
    link.symlink_to(tree)
    assert resolve_under(link, str(link / "photos" / "b.jpg"))[1] == "photos/b.jpg"
    assert resolve_under(link, str(tree / "top.jpg"))[1] == "top.jpg"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty path"),
        ("  ", "empty path"),
        ("a\x00b", "NUL"),
        ("x" * 5000, "longer than 4096"),
        ("photos/nope.jpg", "no such file or folder under the data root"),
        ("photos/" + "n" * 300, "cannot resolve the path \\(File name too long\\)"),
    ],
)
def test_malformed_or_missing_paths_are_refused(tree: Path, value: str, message: str) -> None:
    with pytest.raises(PathRefused, match=message):
        resolve_under(tree, value)


def test_without_a_root_paths_are_disabled(tree: Path) -> None:
    with pytest.raises(PathRefused) as info:
        resolve_under(None, "top.jpg")
    assert str(info.value) == "path inputs are disabled: DLPIPE_DATA_ROOT is not set"
    with pytest.raises(PathRefused, match="does not exist"):
        resolve_under(tree / "missing-root", "top.jpg")


def test_a_folder_lists_its_own_images_by_name(tree: Path) -> None:
    assert list_images(tree, "photos", 10) == ["photos/a.PNG", "photos/b.jpg"]  # no .txt, hidden, subfolder
    assert list_images(tree, ".", 10) == ["top.jpg"]


def test_a_folder_listing_skips_symlinks_out_of_the_root_and_non_files(tree: Path) -> None:
    (tree / "photos" / "out.jpg").symlink_to(tree.parent / "secret.jpg")
    (tree / "photos" / "in.jpg").symlink_to(tree / "top.jpg")
    (tree / "photos" / "folder.jpg").mkdir()
    (tree / "photos" / "dangling.jpg").symlink_to(tree / "gone.jpg")
    assert list_images(tree, "photos", 10) == ["photos/a.PNG", "photos/b.jpg", "photos/in.jpg"]


def test_a_folder_listing_stops_one_past_the_limit(tree: Path) -> None:
    folder = tree / "many"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i:03d}.jpg").write_bytes(b"x")
    assert list_images(tree, "many", 30) == [f"many/{i:03d}.jpg" for i in range(30)]
    assert list_images(tree, "many", 5) == [f"many/{i:03d}.jpg" for i in range(6)]
    assert list_images(tree, "many", 0) == ["many/000.jpg"]


@pytest.mark.parametrize("name", [f"x{ext}" for ext in datapaths.IMAGE_EXTENSIONS] + ["X.JPG", "y.TiFf"])
def test_image_extensions(name: str) -> None:
    assert datapaths.is_image_name(name)


@pytest.mark.parametrize("name", ["x.txt", "x.jpg.txt", "x.heic", "jpg", ".x.jpg", "x.svg"])
def test_other_names_are_not_images(name: str) -> None:
    assert not datapaths.is_image_name(name)


def test_reading_checks_the_path_again_and_caps_the_size(tree: Path) -> None:
    assert read_file(tree, "photos/b.jpg", 100) == b"img:b.jpg"
    with pytest.raises(PathRefused, match="larger than 5 bytes"):
        read_file(tree, "photos/b.jpg", 5)
    with pytest.raises(PathRefused, match="not a file"):
        read_file(tree, "photos", 100)
    with pytest.raises(PathRefused, match="outside"):
        read_file(tree, "../secret.jpg", 100)
    # Replaced by a symlink out of the root after it was checked at submit: refused when read.
    os.remove(tree / "top.jpg")
    (tree / "top.jpg").symlink_to(tree.parent / "secret.jpg")
    with pytest.raises(PathRefused, match="outside"):
        read_file(tree, "top.jpg", 100)
    with pytest.raises(PathRefused, match="DLPIPE_DATA_ROOT is not set"):
        read_file(None, "photos/b.jpg", 100)
