"""Video inputs: frame times, containers we open, and the `frame_at` preprocess stage on real
(generated) videos: the right frame at a scene boundary, the end, broken and refused inputs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import ItemError
from shared.video import VideoError, frame_count, frame_key, frame_times, probe, sniff_format
from tests.support.videos import cat_then_coffee, make_video, scene_of
from workers.transforms import image
from workers.transforms.image import InputConfig
from workers.transforms.video import frame_at, upright


@pytest.mark.parametrize(
    ("start", "stop", "fps", "expected"),
    [
        (0.0, 3.0, 2, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),  # the end is exclusive
        (0.0, 2.0, 1, [0.0, 1.0]),
        (0.1, 0.4, 10, [0.1, 0.2, 0.3]),  # (0.4 - 0.1) * 10 is 3.0000000000000004: still 3 frames
        (1.0, 2.01, 1, [1.0, 2.0]),
        (0.0, 5.0, 0.5, [0.0, 2.0, 4.0]),
        (2.0, 2.0, 30, []),
    ],
)
def test_frame_times_run_from_start_at_fps_before_stop(
    start: float, stop: float, fps: float, expected: list[float]
) -> None:
    assert frame_times(start, stop, fps) == pytest.approx(expected)
    assert frame_count(start, stop, fps) == len(expected)


def test_frame_times_are_computed_not_accumulated_and_keyed_with_three_decimals() -> None:
    times = frame_times(0.0, 10.0, 3)
    assert len(times) == 30 and times[-1] == pytest.approx(29 / 3)
    assert [frame_key(t) for t in times[:4]] == ["0.000", "0.333", "0.667", "1.000"]
    assert frame_key(2.5) == "2.500" and frame_key(12.0) == "12.000"
    with pytest.raises(ValueError):
        frame_count(0, 1, 0)


def test_only_a_few_containers_are_recognised_from_their_first_bytes() -> None:
    assert sniff_format(cat_then_coffee()[:16]) == "mov"
    assert sniff_format(b"\x1a\x45\xdf\xa3" + b"\x00" * 12) == "matroska"
    assert sniff_format(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    # Never left to FFmpeg's guess: a playlist would make it open the files or URLs it names.
    assert sniff_format(b"#EXTM3U\n#EXT-X-VERSION:3\n") is None
    assert sniff_format(b"ffconcat version 1.0\n") is None
    assert sniff_format(b"\xff\xd8\xff\xe0 a jpeg") is None


def test_probe_reads_the_length_and_size_without_decoding() -> None:
    info = probe(io.BytesIO(cat_then_coffee()))
    assert info.duration_s == pytest.approx(3.0)
    assert (info.width, info.height, info.codec) == (320, 240, "h264")
    assert info.frame_rate == pytest.approx(10)
    with pytest.raises(VideoError, match="not a supported video container"):
        probe(io.BytesIO(b"#EXTM3U\nhttp://169.254.169.254/latest\n"))
    with pytest.raises(VideoError, match="cannot open it as mov"):
        probe(io.BytesIO(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200))


@pytest.mark.parametrize(
    ("t", "scene"),
    [
        (0.0, "cat"),
        (1.0, "cat"),
        (1.4, "cat"),
        (1.5, "coffee"),
        (2.0, "coffee"),
        (2.9, "coffee"),
        (2.95, "coffee"),
    ],
)
def test_frame_at_picks_the_frame_shown_at_t(t: float, scene: str) -> None:
    crop = frame_at({"blob": cat_then_coffee(), "t": t})
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8 and crop.flags.c_contiguous
    assert scene_of(crop) == scene


def test_frame_at_takes_the_nearest_frame_around_a_boundary() -> None:
    video = cat_then_coffee()
    assert scene_of(frame_at({"blob": video, "t": 1.44})) == "cat"  # frame 1.4 is nearer than 1.5
    assert scene_of(frame_at({"blob": video, "t": 1.46})) == "coffee"


@pytest.mark.parametrize(("fmt", "codec"), [("matroska", "libx264"), ("avi", "mpeg4"), ("mp4", "mpeg4")])
def test_frame_at_reads_other_containers_and_codecs(fmt: str, codec: str) -> None:
    video = cat_then_coffee(fmt, codec)
    assert scene_of(frame_at({"blob": video, "t": 1.0})) == "cat"
    assert scene_of(frame_at({"blob": video, "t": 2.0})) == "coffee"


def test_frame_at_seeks_through_a_long_gop_and_honours_resize_and_crop() -> None:
    video = make_video(gop=30)  # one keyframe, at 0 s
    crop = frame_at({"blob": video, "t": 2.0}, resize=64, crop=32)
    assert crop.shape == (32, 32, 3)
    assert scene_of(frame_at({"blob": video, "t": 2.0})) == "coffee"


def test_a_time_past_the_end_fails_the_item_saying_how_long_the_video_is() -> None:
    with pytest.raises(ItemError, match=r"^no frame at 3\.500 s \(video is 3\.000 s long\)$"):
        frame_at({"blob": cat_then_coffee(), "t": 3.5})
    with pytest.raises(ItemError, match=r"no frame at 3\.000 s"):
        frame_at({"blob": cat_then_coffee(), "t": 3.0})


@pytest.mark.parametrize(
    ("inp", "reason"),
    [
        (
            {"blob": b"this is not a video at all", "t": 0.0},
            "not a readable video (not a supported video container",
        ),
        (
            {"blob": b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "t": 0.0},
            "not a readable video (cannot open it",
        ),
        ({"blob": cat_then_coffee()[:3000], "t": 0.5}, "not a readable video"),  # cut off: no index
        ({"blob": b"", "t": 0.0}, "no video bytes"),
        ({"blob": None, "t": 0.0}, "no longer stored"),  # Store.load: the job's stored upload expired
        ({"t": 0.0}, "input has no video"),
        ({"blob": cat_then_coffee()}, "no frame time"),
        ({"blob": cat_then_coffee(), "t": -1}, "no frame time"),
        ({"blob": cat_then_coffee(), "t": "1.0"}, "no frame time"),
    ],
)
def test_bad_inputs_fail_the_item_with_a_reason(inp: dict, reason: str) -> None:
    with pytest.raises(ItemError) as err:
        frame_at(inp)
    assert reason in str(err.value)


def test_a_garbled_stream_fails_or_decodes_but_never_raises_anything_else() -> None:
    video = bytearray(cat_then_coffee())
    middle = len(video) // 2
    video[middle : middle + 4000] = bytes(range(256)) * 15 + bytes(160)  # noise over the frame data
    for t in (0.0, 1.0, 1.5, 2.0, 2.9):
        try:
            crop = frame_at({"blob": bytes(video), "t": t})
        except ItemError as exc:
            assert str(exc)
        else:
            assert crop.shape == (224, 224, 3)


@pytest.fixture
def data_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "scene.mp4").write_bytes(cat_then_coffee())
    (tmp_path / "outside.mp4").write_bytes(cat_then_coffee())
    image.configure(InputConfig(data_root=root))
    yield root
    image.configure(None)


def test_a_video_path_is_read_under_the_data_root(data_root: Path) -> None:
    assert scene_of(frame_at({"video_path": "clips/scene.mp4", "t": 1.0})) == "cat"
    assert scene_of(frame_at({"video_path": "clips/../clips/scene.mp4", "t": 2.0})) == "coffee"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.mp4", "video_path ../outside.mp4: outside the data root"),
        ("clips/missing.mp4", "no such file"),
        ("clips", "not a file"),
    ],
)
def test_a_video_path_is_checked_again_by_the_worker(data_root: Path, path: str, reason: str) -> None:
    with pytest.raises(ItemError, match=reason):
        frame_at({"video_path": path, "t": 0.0})


def test_video_paths_are_refused_without_a_data_root(tmp_path: Path) -> None:
    (tmp_path / "scene.mp4").write_bytes(cat_then_coffee())
    image.configure(None)
    with pytest.raises(ItemError, match="DLPIPE_DATA_ROOT is not set"):
        frame_at({"video_path": str(tmp_path / "scene.mp4"), "t": 0.0})


def test_the_video_module_configures_the_shared_data_root(tmp_path: Path) -> None:
    from shared.settings import Settings
    from workers.transforms import video

    try:
        video.configure(Settings(data_root=tmp_path))
        assert image.input_config().data_root == tmp_path
    finally:
        image.configure(None)


def test_upright_turns_by_the_display_rotation_counterclockwise() -> None:
    img = Image.new("RGB", (4, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))  # red in the top-left corner
    assert upright(img, 0) is img
    left = upright(img, 90)  # a quarter turn counterclockwise: top-left goes to bottom-left
    assert left.size == (2, 4) and left.getpixel((0, 3)) == (255, 0, 0)
    right = upright(img, -90)  # clockwise (a phone held upright): top-left goes to top-right
    assert right.size == (2, 4) and right.getpixel((1, 0)) == (255, 0, 0)
    flipped = upright(img, 180)
    assert flipped.size == (4, 2) and flipped.getpixel((3, 1)) == (255, 0, 0)
    assert upright(img, 359.6).size == (4, 2)  # rounds to a whole turn


class CountingContainer:
    """A container whose decode() counts the frames it hands out."""

    def __init__(self, container: object) -> None:
        self.container = container
        self.decoded = 0

    def seek(self, *args: object, **kwargs: object) -> None:
        self.container.seek(*args, **kwargs)  # type: ignore[attr-defined]

    def decode(self, *args: object) -> Iterator[object]:
        for frame in self.container.decode(*args):  # type: ignore[attr-defined]
            self.decoded += 1
            yield frame


@pytest.mark.parametrize(("seek", "most"), [(True, 11), (False, 10**6)])
def test_the_frame_is_found_by_seeking_to_the_keyframe_before_it(seek: bool, most: int) -> None:
    from shared.video import open_container, video_stream
    from workers.transforms.video import _find_frame

    with open_container(io.BytesIO(make_video(seconds=20, gop=10))) as container:  # a keyframe a second
        counting = CountingContainer(container)
        frame = _find_frame(counting, video_stream(container), 18.5, seek=seek)
        assert frame.time == pytest.approx(18.5)
        assert counting.decoded <= most and (seek or counting.decoded >= 186)
