"""Files on the server as inputs (`path`): only under the data root (DLPIPE_DATA_ROOT), never out of it.

A path is taken relative to the data root (an absolute path must lie under it too) and
resolved, symlinks followed, before it is checked: `..`, absolute paths elsewhere and
symlinks that lead out of the root are all refused. The API checks a path when the job
is submitted and stores it relative to the root; the worker that reads the file resolves
and checks it again under its own root (the same storage may be mounted elsewhere there).

A folder stands for every image directly in it (not in subfolders), in name order; hidden
files (`.name`, such as macOS's `._photo.jpg`) and entries that lead out of the root are
left out. A mounted bucket is simply a folder under the data root.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_PATH_CHARS = 4096
DISABLED = "path inputs are disabled: DLPIPE_DATA_ROOT is not set"


class PathRefused(ValueError):
    """A path that is not (or no longer) an allowed file or folder under the data root."""


def _root(root: Path) -> Path:
    try:
        return Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathRefused("the data root (DLPIPE_DATA_ROOT) does not exist on this server") from None


def resolve_under(root: Path | None, value: str) -> tuple[Path, str]:
    """(the resolved path, its POSIX path relative to the root) for an existing file or folder.

    Raises PathRefused: path inputs disabled (no root), an empty or malformed path, a path
    outside the root (after `..` and symlinks), or nothing there.
    """
    if root is None:
        raise PathRefused(DISABLED)
    if not isinstance(value, str) or not value.strip():
        raise PathRefused("empty path")
    if "\x00" in value:
        raise PathRefused("the path contains a NUL character")
    if len(value) > MAX_PATH_CHARS:
        raise PathRefused(f"longer than {MAX_PATH_CHARS} characters")
    base = _root(root)
    try:
        full = (base / value).resolve()  # an absolute `value` replaces `base`
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, names too long
        raise PathRefused(f"cannot resolve the path ({type(exc).__name__})") from None
    if not full.is_relative_to(base):
        raise PathRefused("outside the data root")
    try:
        there = full.exists()
    except OSError as exc:  # a name too long for the file system, for one
        raise PathRefused(f"cannot resolve the path ({exc.strerror or type(exc).__name__})") from None
    if not there:
        raise PathRefused("no such file or folder under the data root")
    return full, full.relative_to(base).as_posix() or "."


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: Path, folder_rel: str, limit: int) -> list[str]:
    """The images directly in the folder `folder_rel` (relative to `root`), sorted by name,
    as paths relative to the root. Stops after `limit` + 1 (the caller tells "too many").

    Only regular files (or symlinks to regular files that stay under the root) with an
    image extension count.
    """
    base = _root(root)
    folder = base / folder_rel
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries if is_image_name(entry.name))
    except OSError as exc:
        raise PathRefused(f"cannot list the folder ({exc.strerror or type(exc).__name__})") from None
    found: list[str] = []
    for name in names:
        rel = name if folder_rel in ("", ".") else f"{folder_rel}/{name}"
        try:
            full = (base / rel).resolve()
        except (OSError, RuntimeError):
            continue
        if not full.is_relative_to(base) or not full.is_file():
            continue
        found.append(rel)
        if len(found) > limit:
            break
    return found


def read_file(root: Path | None, rel: str, max_bytes: int) -> bytes:
    """The bytes of the file `rel` under `root`, checked again; PathRefused if refused or too large."""
    full, _ = resolve_under(root, rel)
    if not full.is_file():
        raise PathRefused("not a file")
    try:
        with open(full, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise PathRefused(f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise PathRefused(f"the file is larger than {max_bytes} bytes")
    return data
