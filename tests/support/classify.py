"""image-classify jobs on a running stack, over HTTP: submit one, wait for it to end, read its top
label; the ImageNet classes the bundled photos show (tests/support/photos.py)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import wait_until

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


def submit(client: httpx.Client, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """POST an image-classify job; the 202's job view."""
    response = client.post("/v1/pipelines/image-classify/jobs", json={"inputs": inputs, **extra})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    return job


def wait_final(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job has ended; its view then."""

    def final() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(final, timeout_s=timeout_s, what=f"job {job_id} to finish")


def top1(output: dict[str, Any]) -> int:
    """The ImageNet index of an output's first label."""
    return output["result"]["labels"][0]["index"]
