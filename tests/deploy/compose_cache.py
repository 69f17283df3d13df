"""What the Compose test builds from, made from the registries this machine reaches (not Docker Hub).

- A Debian bookworm base image (Python 3.11): `debootstrap --variant=minbase` from Debian's mirror,
  trimmed (apt's caches and lists, docs, man pages, locales) and kept as a tarball.
- A wheelhouse: every wheel the images install, built on the host with the project's pins
  (`pip wheel -c constraints.txt '.[worker]'`). The host's pip finds the CPU build of torch in its
  find-links folder; PyPI's own torch wheel is the multi-GB CUDA build. The images install from it
  with `--no-index`, served on loopback by `WheelServer` (builds run on the host's network).

Both are kept under the cache folder (`.dlpipe/compose-cache`, or DLPIPE_COMPOSE_CACHE) and rebuilt
only when what they come from changes. A failure to fetch them is the environment's (`Unavailable`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.deploy.dockerd import Unavailable

REPO = Path(__file__).resolve().parents[2]
DEBOOTSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]
# Left out of the base tarball: nothing in the images reads them (apt gets fresh lists if it runs).
TRIM = ["var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc", "usr/share/man", "usr/share/locale"]
WHEEL_INPUTS = ["pyproject.toml", "constraints.txt", "requirements-nodeps.txt"]


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _run(command: list[str], what: str, timeout_s: float, **kwargs: Any) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{what}: timed out after {timeout_s}s") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-6:])
        raise Unavailable(f"{what} failed ({done.returncode}): {tail}")


def base_tarball(cache: Path) -> Path:
    """The trimmed debootstrap root as a tarball (about a minute from Debian's mirror, once)."""
    tarball = cache / f"base-bookworm-{_key(' '.join(DEBOOTSTRAP + TRIM).encode())}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap is not installed (Debian: apt-get install debootstrap)")
    root = cache / "rootfs.tmp"
    shutil.rmtree(root, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        _run(["debootstrap", *DEBOOTSTRAP, str(root)], "debootstrap of the base image", timeout_s=900)
        partial_tar = tarball.with_suffix(".tar.tmp")
        excludes = [f"--exclude=./{pattern}" for pattern in TRIM]
        _run(["tar", "-C", str(root), *excludes, "-cf", str(partial_tar), "."], "tar of the base", timeout_s=300)
        partial_tar.rename(tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tarball


def wheelhouse(cache: Path) -> Path:
    """Every wheel the API and worker images install, for this host's Python (3.11, manylinux)."""
    key = _key(*((REPO / name).read_bytes() for name in WHEEL_INPUTS))
    target = cache / f"wheelhouse-{key}"
    if target.is_dir():
        return target
    building = cache / "wheelhouse.tmp"
    shutil.rmtree(building, ignore_errors=True)
    pip = [sys.executable, "-m", "pip"]
    constraints = str(REPO / "constraints.txt")
    # setuptools: the project's build backend (pip builds dlpipe from its folder, in isolation).
    _run(
        [*pip, "wheel", "-q", "--wheel-dir", str(building), "-c", constraints, f"{REPO}[worker]", "setuptools>=68"],
        "pip wheel (the images' dependencies)", timeout_s=1200,
    )  # fmt: skip
    _run(
        [*pip, "download", "-q", "--no-deps", "-d", str(building), "-r", str(REPO / "requirements-nodeps.txt")],
        "pip download (requirements-nodeps.txt)", timeout_s=600,
    )  # fmt: skip
    for own in building.glob("dlpipe-*.whl"):  # the images build the project from its own files
        own.unlink()
    torch = list(building.glob("torch-*.whl"))
    if not torch or "+cpu" not in torch[0].name:
        found = [path.name for path in torch]
        raise Unavailable(f"no CPU torch wheel where pip looked (found {found}): the worker image would be CUDA")
    for old in cache.glob("wheelhouse-*"):
        shutil.rmtree(old, ignore_errors=True)
    building.rename(target)
    return target


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class WheelServer:
    """The wheelhouse as a find-links page on 127.0.0.1 (pip trusts loopback over plain HTTP)."""

    def __init__(self, directory: Path) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> WheelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
