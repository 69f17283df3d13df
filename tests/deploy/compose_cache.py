"""What the Compose test builds from, made from the registries this machine reaches (not Docker Hub).

- A Debian bookworm base image (Python 3.11): `debootstrap --variant=minbase` from Debian's mirror,
  trimmed (apt's caches and lists, docs, man pages, locales) and kept as a tarball.
- A wheelhouse: every wheel the images install, built with the project's pins by pip in the base
  image (`pip wheel -c constraints.txt '.[worker]'`, from PyPI), with the CPU build of torch the
  host's pip finds (its find-links folder here; PyPI's own torch wheel is the multi-GB CUDA build).
  The images install from it with `--no-index`, served on loopback by `WheelServer` (builds run on
  the host's network).

Both are kept under the cache folder (`.dlpipe/compose-cache`, or TEST_COMPOSE_CACHE) and rebuilt
only when what they come from changes. A failure to fetch them is the environment's (`Unavailable`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.deploy.dockerd import Unavailable

REPO = Path(__file__).resolve().parents[2]
DEBOOTSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]
# Left out of the base tarball: nothing in the images reads them (apt gets fresh lists if it runs).
TRIM = [
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
]
WHEEL_INPUTS = ["pyproject.toml", "constraints.txt", "requirements-nodeps.txt"]


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _run(command: list[str], what: str, timeout_s: float, **kwargs: Any) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
        )
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
        _run(
            ["tar", "-C", str(root), *excludes, "-cf", str(partial_tar), "."],
            "tar of the base",
            timeout_s=300,
        )
        partial_tar.rename(tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tarball


def torch_wheel(cache: Path) -> Path:
    """The CPU torch wheel constraints.txt pins, as the host's pip finds it (its find-links folder
    here); PyPI's wheel of the same version is the CUDA build, which the test must not install."""
    pin = next(
        line for line in (REPO / "constraints.txt").read_text().splitlines() if line.startswith("torch==")
    )
    folder = cache / "torch"
    found = list(folder.glob("torch-*+cpu-*.whl"))
    if found:
        return found[0]
    shutil.rmtree(folder, ignore_errors=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(folder),
            pin,
        ],
        f"pip download {pin}",
        timeout_s=900,
    )
    found = list(folder.glob("torch-*+cpu-*.whl"))
    if not found:
        names = [path.name for path in folder.iterdir()]
        raise Unavailable(f"pip finds no CPU build for {pin} (found {names}): the worker image would be CUDA")
    return found[0]


def wheelhouse(cache: Path, base_image: str, docker: Callable[..., subprocess.CompletedProcess[str]]) -> Path:
    """Every wheel the API and worker images install, resolved by pip in the base image itself (its
    Python is Debian's 3.11.2: markers differ from the host's, e.g. redis wants async-timeout there).
    That pip reaches PyPI on the host's network with the host's CA bundle, and torch from torch_wheel."""
    key = _key(*((REPO / name).read_bytes() for name in WHEEL_INPUTS), base_image.encode())
    target = cache / f"wheelhouse-{key}"
    if target.is_dir():
        return target
    torch = torch_wheel(cache)
    building = cache / "wheelhouse.tmp"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    # The project is copied out of the read-only mount: pip builds it in its folder.
    script = " && ".join(
        [
            "mkdir /tmp/src && cp -r /src/pyproject.toml /src/README.md /src/shared /src/services /src/workers /src/bench /tmp/src",
            "python3 -m venv /tmp/venv",
            # setuptools: the project's build backend (the images' pip builds dlpipe from its folder)
            (
                "/tmp/venv/bin/pip wheel -q --wheel-dir /wheels --find-links /torch -c /src/constraints.txt"
                " '/tmp/src[worker]' 'setuptools>=68'"
            ),
            "/tmp/venv/bin/pip download -q --no-deps -d /wheels -r /src/requirements-nodeps.txt",
            "rm -f /wheels/dlpipe-*.whl",
            "chmod -R a+rX /wheels",
        ]
    )
    host_ca = "/etc/ssl/certs/ca-certificates.crt"
    ca = ["-v", f"{host_ca}:/etc/ssl/certs/host-ca.crt:ro", "-e", "PIP_CERT=/etc/ssl/certs/host-ca.crt"]
    done = docker(
        "run",
        "--rm",
        "--network",
        "host",
        *(ca if Path(host_ca).is_file() else []),
        "-v",
        f"{REPO}:/src:ro",
        "-v",
        f"{torch.parent}:/torch:ro",
        "-v",
        f"{building}:/wheels",
        base_image,
        "bash",
        "-c",
        script,
        timeout_s=1500,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-6:])
        raise Unavailable(f"pip wheel in the base image (PyPI) failed ({done.returncode}): {tail}")
    if not list(building.glob("torch-*+cpu-*.whl")):
        raise Unavailable("the wheelhouse has no CPU torch: the worker image would be CUDA")
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
        handler = partial(_QuietHandler, directory=str(directory))
        # The URL is a build arg, so part of Docker's build cache key: the same port for the same
        # wheelhouse lets a rerun reuse the cached layers (any free port when that one is taken).
        preferred = 20000 + int(hashlib.sha256(directory.name.encode()).hexdigest(), 16) % 20000
        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", preferred), handler)
        except OSError:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
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
