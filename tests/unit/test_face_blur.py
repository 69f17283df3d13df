"""face-blur's blur stage as pure functions: no model, no Redis."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import ItemError
from shared.files import OutputFile
from tests.support.photos import photo_rgb
from workers.transforms.blur import blur_boxes, blur_faces, padded_box

HEAD = [180.0, 59.0, 270.0, 174.0]  # the astronaut's face box, as face-detect finds it


def astronaut() -> np.ndarray:
    return np.asarray(photo_rgb("astronaut.png"), dtype=np.uint8)


def test_pixels_in_the_padded_box_change_strongly_and_none_outside() -> None:
    image = astronaut()
    blurred = blur_boxes(image, [HEAD], padding=0.15)
    assert blurred.shape == image.shape and blurred.dtype == np.uint8
    left, top, right, bottom = padded_box(HEAD, 512, 512, 0.15)  # type: ignore[misc]
    assert (left, top, right, bottom) == (166, 41, 284, 192)  # 13.5 / 17.25 px more each side
    outside = np.ones(image.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(blurred[outside], image[outside])  # not one pixel outside changed
    face = (slice(top, bottom), slice(left, right))
    diff = np.abs(blurred[face].astype(int) - image[face].astype(int))
    assert diff.mean() > 10 and (diff > 20).mean() > 0.2, diff.mean()
    # Anonymised: the face's detail is gone (its high frequencies), not just softened.
    detail = np.abs(np.diff(image[face].astype(int), axis=1)).mean()
    left_detail = np.abs(np.diff(blurred[face].astype(int), axis=1)).mean()
    assert left_detail < detail / 5, (left_detail, detail)


def test_boxes_are_clipped_to_the_image_and_one_wholly_outside_is_skipped() -> None:
    image = astronaut()
    blurred = blur_boxes(image, [[-40, -40, 30, 30], [600, 600, 700, 700]], padding=0.0)
    assert not np.array_equal(blurred[:30, :30], image[:30, :30])
    assert np.array_equal(blurred[30:, :], image[30:, :]) and np.array_equal(blurred[:, 30:], image[:, 30:])
    assert padded_box([600, 600, 700, 700], 512, 512) is None
    with pytest.raises(ItemError, match="x1 < x2"):
        blur_boxes(image, [[10, 10, 5, 20]])
    assert np.array_equal(blur_boxes(image, []), image)


def test_blur_faces_gives_the_jpeg_as_a_file_in_the_decoded_images_pixels() -> None:
    image = astronaut()
    found = {"faces": [{"box": HEAD, "score": 1.0, "landmarks": []}], "boxes": [HEAD]}
    # decode scaled the 512 x 512 original to 256 x 256: the boxes (original pixels) are halved
    small = np.asarray(Image.fromarray(image).resize((256, 256)), dtype=np.uint8)
    result = blur_faces({"image": small, "scale": [2.0, 2.0], "size": [512, 512]}, found, quality=90)
    assert result["faces"] == found["faces"] and result["boxes"] == [HEAD] and result["size"] == [256, 256]
    (file,) = result["files"]
    assert isinstance(file, OutputFile) and file.name == "blurred.jpg" and file.content_type == "image/jpeg"
    decoded = np.asarray(Image.open(io.BytesIO(file.data)).convert("RGB"), dtype=int)
    assert decoded.shape == (256, 256, 3)
    face, far = (slice(30, 80), slice(95, 130)), (slice(200, 250), slice(10, 60))  # halved head; lower left
    face_diff, far_diff = np.abs(decoded[face] - small[face]).mean(), np.abs(decoded[far] - small[far]).mean()
    assert far_diff < 6 and face_diff > 3 * far_diff, (face_diff, far_diff)  # far: JPEG's own loss only


def test_a_frame_names_its_file_by_its_time() -> None:
    image = astronaut()
    decoded = {"image": image, "scale": [1.0, 1.0], "size": [512, 512], "t": 2.5}
    result = blur_faces(decoded, {"faces": [], "boxes": []}, name="frame-{t}.jpg")
    assert result["files"][0].name == "frame-2.500.jpg"
    with pytest.raises(ItemError, match="not a video frame"):
        blur_faces({**decoded, "t": None}, {"faces": [], "boxes": []}, name="frame-{t}.jpg")
    with pytest.raises(ItemError, match="expected the faces stage's result"):
        blur_faces(decoded, {"faces": []})
