"""The peers' virtualenvs: one per peer under the cache folder (.dlpipe/bench-venvs/<peer>), made
with `python3.11 -m venv` and pip, never part of dlpipe's own environment.

Each gets torch==2.13.0 (the CPU build pip finds on this machine; checked after the install: no
CUDA build, no nvidia-* wheels), the peer, and this project's base and `worker` dependencies (read
from pyproject.toml), every version pinned by the peer's constraints file, bench/peers/<peer>.txt
(a pip freeze of a fresh install, committed). The repository itself is not installed: the peer's
server runs with it on PYTHONPATH, so it imports the current workers.models and
workers.transforms. A venv is made again when its constraints or requirements change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS_DIR = Path(__file__).resolve().parent / "peers"
TORCH_PIN = "torch==2.13.0"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    requirement: str  # what pip installs for the peer
    dist: str  # its distribution name, for the version
    module: str  # the server module, run as `python -m`


PEERS = {
    "litserve": PeerSpec("litserve", "litserve", "litserve", "bench.servers.litserve_app"),
    "ray": PeerSpec("ray", "ray[serve]", "ray", "bench.servers.ray_app"),
}


@dataclass
class PeerEnv:
    name: str
    python: Path
    version: str
    torch: str
    install_s: float  # how long its install took (when it was made, maybe by an earlier run)
    size_mb: float

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "torch": self.torch,
            "venv": str(self.python.parent.parent),
            "install_s": round(self.install_s, 1),
            "size_mb": round(self.size_mb, 1),
        }


def project_requirements() -> list[str]:
    """dlpipe's base and `worker` dependencies, as pyproject.toml lists them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["worker"]]


def requirements(spec: PeerSpec) -> list[str]:
    reqs = [TORCH_PIN, spec.requirement, "psutil"]
    reqs += [r for r in project_requirements() if not r.startswith("torch")]
    return reqs


def _fingerprint(spec: PeerSpec) -> str:
    text = (CONSTRAINTS_DIR / f"{spec.name}.txt").read_text() + "\n".join(requirements(spec))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_python() -> str:
    found = shutil.which("python3.11")
    return found or str(getattr(sys, "_base_executable", None) or sys.executable)


def ensure(name: str, cache_dir: Path, *, install: bool = True) -> PeerEnv:
    """The peer's venv, made (or made again) if missing or stale. Raises if it cannot be had."""
    spec = PEERS[name]
    venv = (cache_dir / name).resolve()
    python = venv / "bin" / "python"
    stamp = venv / ".bench-stamp"
    fingerprint = _fingerprint(spec)
    recorded = _read_stamp(stamp)
    if not (python.exists() and recorded.get("fingerprint") == fingerprint):
        if not install:
            raise RuntimeError(f"peer {name}: no up-to-date venv at {venv} (and --no-install)")
        install_s = _install(spec, venv)
        recorded = {
            "fingerprint": fingerprint,
            "install_s": round(install_s, 1),
            "size_mb": round(_size_mb(venv), 1),
        }
        stamp.write_text(json.dumps(recorded) + "\n")
    info = _probe(python, spec)
    return PeerEnv(name, python, info["version"], info["torch"], recorded["install_s"], recorded["size_mb"])


def _read_stamp(stamp: Path) -> dict[str, Any]:
    """What the venv's install recorded: its fingerprint, how long it took, its size."""
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _install(spec: PeerSpec, venv: Path) -> float:
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / f"{spec.name}-install.log"
    log.info("peer %s: creating %s (pip log: %s)", spec.name, venv, log_path)
    with log_path.open("wb") as out:
        subprocess.run(
            [base_python(), "-m", "venv", str(venv)], check=True, stdout=out, stderr=subprocess.STDOUT
        )
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        constraints = ["-c", str(CONSTRAINTS_DIR / f"{spec.name}.txt")]
        done = subprocess.run(
            [*pip, *constraints, *requirements(spec)], stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"peer {spec.name}: pip install failed ({done.returncode}):\n{tail}")
    elapsed = time.monotonic() - started
    log.info("peer %s: installed in %.0fs", spec.name, elapsed)
    return elapsed


def _probe(python: Path, spec: PeerSpec) -> dict[str, str]:
    """The peer's and torch's versions; refuses a CUDA torch or nvidia-* wheels."""
    code = "\n".join(
        [
            "import json, importlib.metadata as m, torch",
            "names = [d.metadata['Name'] or '' for d in m.distributions()]",
            f"print(json.dumps({{'version': m.version({spec.dist!r}), 'torch': torch.__version__,",
            "    'cuda': torch.version.cuda, 'nvidia': sorted(n for n in names if n.lower().startswith('nvidia'))}))",
        ]
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"peer {spec.name}: its venv does not import: {out.stderr[-800:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if info["cuda"] is not None or info["nvidia"]:
        raise RuntimeError(
            f"peer {spec.name}: got a CUDA torch ({info}); expected the CPU build of {TORCH_PIN}"
        )
    return {"version": info["version"], "torch": info["torch"]}


def _size_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total / 1e6
