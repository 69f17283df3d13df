"""Swagger UI, vendored: the files `/docs` serves (services/api/routers/docs.py) and their record.

The page must work on a host with no way out, so the API never sends a browser to a CDN: the
few files of the npm package `swagger-ui-dist` the page needs are kept in
services/api/static/vendor/swagger-ui-dist/, beside `vendor.json`, which records the package,
its exact version, the npm tarball and its `integrity` (sha512, as the registry gives it), and
the sha256 of every file kept (a test checks the files against it). To bump the version (needs
npm and the registry; never part of `make test`):

    make vendor-docs SWAGGER_UI_VERSION=5.36.0      # or: python -m services.api.vendor 5.36.0

which runs `npm pack`, checks the tarball against the registry's `dist.integrity`, and rewrites
the files and the record.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = "swagger-ui-dist"
FOLDER = Path(__file__).resolve().parent / "static" / "vendor" / PACKAGE
RECORD = "vendor.json"
# What the page loads (the script, the style sheet, the icon) and the licences that come with them.
KEPT = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
    "swagger-ui-bundle.js.LICENSE.txt",
)
OPTIONAL = frozenset({"NOTICE", "swagger-ui-bundle.js.LICENSE.txt"})  # a release may drop these


@dataclass(frozen=True)
class Vendored:
    package: str
    version: str
    tarball: str
    integrity: str
    files: dict[str, str]  # name -> sha256 (hex)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def swagger_ui() -> Vendored:
    """The record of the vendored Swagger UI (read once)."""
    data = json.loads((FOLDER / RECORD).read_text())
    return Vendored(data["package"], data["version"], data["tarball"], data["integrity"], dict(data["files"]))


def _npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def refetch(version: str) -> Vendored:
    """Fetch `swagger-ui-dist@version` with `npm pack`, check it against the registry's integrity,
    and write the kept files and their record into FOLDER."""
    spec = f"{PACKAGE}@{version}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        meta = json.loads(_npm("view", spec, "dist", "--json", cwd=work))
        [packed] = json.loads(_npm("pack", spec, "--json", cwd=work))
        tarball = (work / packed["filename"]).read_bytes()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        if digest != meta["integrity"]:
            raise SystemExit(f"{spec}: the tarball's {digest} is not the registry's {meta['integrity']}")
        blobs: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
            for name in KEPT:
                try:
                    member = tar.extractfile(f"package/{name}")
                except KeyError:
                    member = None
                if member is not None:
                    blobs[name] = member.read()
                elif name not in OPTIONAL:
                    raise SystemExit(f"{spec} has no {name}")
    FOLDER.mkdir(parents=True, exist_ok=True)
    for old in FOLDER.iterdir():
        if old.name != RECORD and old.name not in blobs:
            old.unlink()
    for name, blob in blobs.items():
        (FOLDER / name).write_bytes(blob)
    record = {
        "package": PACKAGE,
        "version": packed["version"],
        "tarball": meta["tarball"],
        "integrity": meta["integrity"],
        "files": {name: hashlib.sha256(blob).hexdigest() for name, blob in sorted(blobs.items())},
    }
    (FOLDER / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    swagger_ui.cache_clear()
    return swagger_ui()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m services.api.vendor VERSION (now {swagger_ui().version})")
    done = refetch(sys.argv[1])
    print(f"{done.package}@{done.version}: {', '.join(done.files)} ({done.integrity})")
