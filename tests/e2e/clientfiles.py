"""Folders of real photos for the client tests, and the jobs a run made (found by its metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dlpipe
from tests.support.photos import corrupt_bytes, photo_bytes

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg")
CAT_CLASSES = range(281, 286)


def photo_folder(root: Path, count: int = 30, corrupt: bool = False) -> list[str]:
    """`count` distinct small JPEGs (each photo at its own size) under `root`; their names as the
    CLI shows them (root/pNN.jpg); a corrupt one (bad.jpg) too if asked."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        path = root / f"p{i:02d}.jpg"
        path.write_bytes(photo_bytes(PHOTOS[i % len(PHOTOS)], size=(320 + i, 240 + i)))
        names.append(path.as_posix())
    if corrupt:
        (root / "bad.jpg").write_bytes(corrupt_bytes())
        names.append((root / "bad.jpg").as_posix())
    return sorted(names)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def jobs_of_run(client: dlpipe.Client, run_id: str) -> list[dlpipe.JobView]:
    """Every job submitted with metadata {"run": run_id}, in full."""
    ids = [s.id for s in client.jobs(pipeline="image-classify") if (s.metadata or {}).get("run") == run_id]
    return [client.job(i) for i in ids]
