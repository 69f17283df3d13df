"""The cascade's box geometry and CPU stages on hand-made numbers (no torch, no weights):
NMS, regression, squaring, crops, the pyramid's scales, and rows regrouped per item."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import ItemError
from workers.models.rows import Rows, concat_rows
from workers.transforms import faces
from workers.transforms.boxes import crop_resized, grouped_nms, nms, regress, square


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_box_apart() -> None:
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59]], dtype=np.float64)
    scores = np.array([0.8, 0.9, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # best first; box 0 overlaps box 1 by ~0.67
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 2]  # under the threshold: both stay
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_min_mode_drops_a_box_inside_a_bigger_one_that_union_keeps() -> None:
    boxes = np.array([[0, 0, 99, 99], [10, 10, 39, 39]], dtype=np.float64)  # IoU 0.09, inside: 1.0
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.7, mode="union").tolist() == [0, 1]
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [0]
    with pytest.raises(ValueError, match="mode"):
        nms(boxes, scores, 0.7, mode="max")


def test_grouped_nms_never_suppresses_across_groups() -> None:
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    assert grouped_nms(boxes, scores, np.array([0.6, 0.6, 0.42]), 0.5).tolist() == [0, 2]


def test_regression_moves_each_edge_by_a_share_of_the_box_and_square_keeps_the_centre() -> None:
    box = np.array([[10.0, 20.0, 29.0, 59.0]])  # 20 x 40 pixels counting both edges
    moved = regress(box, np.array([[0.1, -0.1, 0.0, 0.5]]))
    assert moved.tolist() == [[12.0, 16.0, 29.0, 79.0]]
    assert regress(box, np.array([[0.1, 0.0, 0.0, 0.0]]), inclusive=False)[0, 0] == pytest.approx(11.9)
    squared = square(np.array([[10.0, 20.0, 30.0, 60.0]]))
    assert squared.tolist() == [[0.0, 20.0, 40.0, 60.0]]


def test_crops_are_black_outside_the_image_and_resized_with_an_area_filter() -> None:
    image = np.full((40, 60, 3), 200, dtype=np.uint8)
    image[:, :30] = 10  # left half dark
    out = crop_resized(image, np.array([[0, 0, 20, 20], [-20, 0, 20, 40], [100, 100, 120, 120]]), 10)
    assert out.shape == (3, 10, 10, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(image[0:20, 0:20]).resize((10, 10), Image.Resampling.BOX))
    assert np.array_equal(out[0], expected)
    assert out[1][:, :5].max() == 0 and out[1][:, 5:].min() == 10  # the left half lies off the image
    assert out[2].max() == 0  # wholly outside
    assert crop_resized(image, np.zeros((0, 4)), 24).shape == (0, 24, 24, 3)


def jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = orientation  # EXIF Orientation
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_decode_gives_the_upright_image_at_most_max_side_and_the_way_back_to_its_pixels() -> None:
    rotated = faces.decode_image({"image": jpeg((400, 200), orientation=6)}, max_side=100)
    assert rotated["image"].shape == (100, 50, 3)  # upright 200 wide x 400 tall, a quarter of it
    assert rotated["size"] == [200, 400] and rotated["scale"] == [4.0, 4.0]
    small = faces.decode_image({"image": jpeg((60, 40))}, max_side=100)
    assert small["image"].shape == (40, 60, 3) and small["scale"] == [1.0, 1.0]  # never scaled up
    with pytest.raises(ItemError, match="not a decodable image"):
        faces.decode_image({"image": b"not an image"})


def test_the_pyramid_follows_the_reference_from_a_20_pixel_face_down_to_12_pixels() -> None:
    scales = faces.pyramid_scales(512, 512)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 10  # 512 * 0.6 * 0.709^9 = 14.6 >= 12
    assert all(b / a == pytest.approx(0.709) for a, b in zip(scales, scales[1:]))
    levels = faces.pyramid({"image": np.zeros((512, 300, 3), np.uint8)})
    assert levels["levels"][0].shape == (308, 181, 3)  # int(side * 0.6 + 1), as the reference
    assert len(levels["levels"]) == len(levels["scales"]) == len(faces.pyramid_scales(300, 512))
    with pytest.raises(ValueError, match="min_face"):
        faces.pyramid_scales(512, 512, min_face=8)


def test_a_p_net_cell_becomes_its_window_in_the_images_pixels() -> None:
    # Cell (x 10, y 5) of the level at scale 0.5: a 12-pixel window at 2 * cell, i.e. 24 pixels.
    cells = np.array([[0.5, 10, 5, 0.9, 0, 0, 0, 0]], dtype=np.float32)
    (box,) = faces.candidates(cells)
    assert box.tolist() == pytest.approx([42, 22, 64, 44, 0.9])
    assert faces.candidates(np.zeros((0, 8), np.float32)).shape == (0, 5)


def test_faces_are_given_in_the_original_images_pixels_and_clipped_to_it() -> None:
    cropped = {
        "boxes": np.array([[11, 21, 30, 40, 0.9], [91, 1, 110, 20, 0.95]], dtype=np.float32),
        "scale": [2.0, 2.0],  # the image was decoded at half its size: 120 x 100 of 240 x 200
        "size": [240, 200],
    }
    marks = [0.25, 0.75, 0.5, 0.3, 0.7, 0.3, 0.3, 0.6, 0.8, 0.8]
    scored = np.array([[0.99, 0, 0, 0, 0, *marks], [0.98, 0, 0, 0.5, 0, *marks]], dtype=np.float32)
    result = faces.faces(cropped, scored)
    assert [f["score"] for f in result["faces"]] == [0.99, 0.98]
    first, second = result["faces"]
    assert first["box"] == [20.0, 40.0, 60.0, 80.0]  # (10, 20)-(30, 40) in the decoded image, times 2
    assert first["landmarks"][0] == [30.0, 52.0]  # (10 + 20 * 0.25, 20 + 20 * 0.3) times 2
    assert second["box"] == [180.0, 0.0, 240.0, 40.0]  # x2 = 230 regressed by half a box: past the edge
    assert result["boxes"] == [first["box"], second["box"]]
    low = scored.copy()
    low[:, 0] = 0.5
    assert faces.faces(cropped, low) == {"faces": [], "boxes": []}
    with pytest.raises(ItemError, match="scored 1 crops of 2"):
        faces.faces(cropped, scored[:1])


def test_rows_regroup_items_of_several_rows_none_or_one() -> None:
    rows = Rows((2, 0, None, 1))
    assert rows.total == 4
    got = rows.regroup(np.arange(4))
    assert [g.tolist() for g in got] == [[0, 1], [], 2, [3]]
    with pytest.raises(RuntimeError, match="3 rows for items holding 4"):
        rows.regroup(np.arange(3))
    stacked, counts = concat_rows(
        [np.zeros((2, 4, 4, 3), np.uint8), np.zeros((0, 4, 4, 3), np.uint8)], (4, 4, 3), np.uint8
    )
    assert stacked.shape == (2, 4, 4, 3) and counts.counts == (2, 0)
    with pytest.raises(ValueError, match="item 1: rows of shape"):
        concat_rows([np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 5, 5, 3), np.uint8)], (4, 4, 3), np.uint8)
