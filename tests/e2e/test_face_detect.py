"""End to end: the MTCNN cascade through HTTP and real worker processes: face-detect on photos,
video-faces on an uploaded video, each job through ten stages (three models) of the stack, and
face-blur's JPEG served as a file of its output."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.classify import wait_final
from tests.support.faces import HEAD, overlap
from tests.support.photos import photo_bytes, photo_rgb
from tests.support.videos import astronaut_then_coffee

pytestmark = pytest.mark.e2e


def test_faces_in_photos_and_in_a_videos_frames(client: httpx.Client) -> None:
    photos = [photo_bytes("astronaut.png"), photo_bytes("coffee.png")]
    body = {"inputs": [{"image_base64": base64.b64encode(p).decode()} for p in photos]}
    photo_job = client.post("/v1/pipelines/face-detect/jobs", json=body)
    assert photo_job.status_code == 202, photo_job.text
    files = [("files", ("scene.mp4", astronaut_then_coffee(), "video/mp4"))]
    video_job = client.post(
        "/v1/pipelines/video-faces/jobs", files=files, data={"options": json.dumps({"fps": 1})}
    )
    assert video_job.status_code == 202, video_job.text

    done = wait_final(client, photo_job.json()["id"])
    assert done["status"] == "succeeded", done
    astronaut, coffee = (o["result"] for o in done["outputs"])
    (face,) = astronaut["faces"]
    assert overlap(face["box"], HEAD) > 0.8 and face["score"] > 0.99 and len(face["landmarks"]) == 5, face
    assert astronaut["boxes"] == [face["box"]]
    assert coffee == {"faces": [], "boxes": []}

    done = wait_final(client, video_job.json()["id"])
    assert done["status"] == "succeeded", done
    frames = done["outputs"][0]["result"]["frames"]
    assert list(frames) == ["0.000", "1.000", "2.000"]
    assert [len(frames[t]["faces"]) for t in frames] == [1, 1, 0]  # the astronaut until 1.5 s, then coffee
    x1, y1, x2, y2 = frames["0.000"]["boxes"][0]
    assert 90 < (x1 + x2) / 2 < 190 and 20 < (y1 + y2) / 2 < 100  # her head, in the 320 x 240 frame


def test_face_blur_serves_the_photo_with_the_face_blurred(client: httpx.Client) -> None:
    files = [("files", ("astronaut.png", photo_bytes("astronaut.png", fmt=None), "image/png"))]
    job = client.post("/v1/pipelines/face-blur/jobs", files=files)
    assert job.status_code == 202, job.text
    done = wait_final(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    result = done["outputs"][0]["result"]
    (face,) = result["faces"]
    (described,) = result["files"]
    served = client.get(described["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert served.headers["content-security-policy"].startswith("default-src 'none'")
    blurred = np.asarray(Image.open(io.BytesIO(served.content), formats=["JPEG"]).convert("RGB"), dtype=int)
    original = np.asarray(photo_rgb("astronaut.png"), dtype=int)
    assert blurred.shape == original.shape
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    assert np.abs(blurred[y1:y2, x1:x2] - original[y1:y2, x1:x2]).mean() > 15  # the face: gone
    assert np.abs(blurred[400:500, 20:120] - original[400:500, 20:120]).mean() < 6  # far: as it was
