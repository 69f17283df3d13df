"""The console in a real browser (chromium, headless) against `dlpipe up`: submit real photos,
a corrupt file, texts, a video; watch a job live; cancel; filter the job list; watch the System
view under load; hostile file names and metadata stay text. One browser for the module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.console_browser import (
    browser_for,
    css,
    one,
    open_view,
    page_errors,
    screenshots,
    skip_without_browser,
    wait,
)
from tests.support.photos import FHD, corrupt_bytes, photo_bytes
from tests.support.videos import cat_then_coffee, make_video

pytestmark = [pytest.mark.e2e, skip_without_browser()]

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
XSS_META = {"note": "<script>alert(2)</script>", "html": "<b onmouseover=alert(3)>bold</b>"}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser_for() as d:
        yield d


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("console-files")
    made = {
        "cat": ("chelsea.jpg", photo_bytes("chelsea.png", "JPEG")),
        "coffee": ("coffee.jpg", photo_bytes("coffee.png", "JPEG")),
        "astronaut": ("astronaut.jpg", photo_bytes("astronaut.png", "JPEG")),
        "corrupt": ("broken.jpg", corrupt_bytes()),
        "xss": (XSS_NAME, photo_bytes("chelsea.png", "JPEG")),
        "video": ("cat-then-coffee.mp4", cat_then_coffee()),
    }
    paths = {}
    for key, (name, data) in made.items():
        paths[key] = folder / name
        paths[key].write_bytes(data)
    return paths


def submit_files(
    driver: Any, pipeline: str, paths: list[Path], metadata: dict | None = None, shot: str | None = None
) -> str:
    """Fill the submit form with these files and send it; the opened job's id."""
    from selenium.webdriver.support.ui import Select

    one(driver, f"select[name=pipeline] option[value='{pipeline}']")
    Select(one(driver, "select[name=pipeline]")).select_by_value(pipeline)
    one(driver, "input[type=file]").send_keys("\n".join(str(p) for p in paths))
    wait(driver, lambda d: len(css(d, ".file-list li")) == len(paths), "the chosen files listed")
    if metadata is not None:
        one(driver, "details.more summary").click()
        one(driver, "textarea[name=metadata]").send_keys(json.dumps(metadata))
    if shot:
        screenshots(driver, shot)
    one(driver, "button[type=submit].primary").click()
    wait(driver, lambda d: d.execute_script("return location.hash").startswith("#/job/"), "the job's view")
    return driver.execute_script("return decodeURIComponent(location.hash.slice(6))")


def card(driver: Any, index: int, status: str) -> Any:
    return one(driver, f".output[data-index='{index}'][data-status='{status}']", f"output {index} {status}")


def test_a_photo_gets_its_cat_label_live(driver: Any, stack: Stack, files: dict[str, Path]) -> None:
    open_view(driver, stack.base_url, "submit")
    job_id = submit_files(driver, "image-classify", [files["cat"], files["coffee"]], shot="submit")
    labels = wait(driver, lambda d: [e.text for e in css(d, ".output[data-index='0'] .label-name")], "labels")
    assert any("cat" in label for label in labels), labels
    card(driver, 1, "succeeded")
    wait(
        driver,
        lambda d: d.execute_script(
            "const i = document.querySelector(\".output[data-index='0'] img.thumb\");"
            " return i && i.complete && i.naturalWidth > 0"
        ),
        "the photo's thumbnail, from the kept input",
    )
    wait(driver, lambda d: "succeeded" in one(d, ".job-status").text, "the job's end")
    assert "2 / 2" in one(driver, ".progress-text").text
    assert job_id in one(driver, ".raw").get_attribute("textContent")
    screenshots(driver, "job")
    assert page_errors(driver) == []


def test_a_job_sent_with_high_priority_keeps_it(driver: Any, stack: Stack, files: dict[str, Path]) -> None:
    from selenium.webdriver.support.ui import Select

    open_view(driver, stack.base_url, "submit")
    one(driver, "details.more summary").click()
    Select(one(driver, "select[name=priority]")).select_by_value("high")
    job_id = submit_files(driver, "image-classify", [files["cat"]])
    card(driver, 0, "succeeded")
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["priority"] == "high"


def test_a_corrupt_file_shows_its_reason(driver: Any, stack: Stack, files: dict[str, Path]) -> None:
    open_view(driver, stack.base_url, "submit")
    submit_files(driver, "image-classify", [files["corrupt"], files["cat"]])
    card(driver, 0, "failed")
    reason = wait(
        driver, lambda d: one(d, ".output[data-index='0'] .reason").text, "the failed item's reason"
    )
    assert reason and reason != "failed", reason
    card(driver, 1, "succeeded")


def test_faces_are_boxed_over_their_photo(driver: Any, stack: Stack, files: dict[str, Path]) -> None:
    open_view(driver, stack.base_url, "submit")
    submit_files(driver, "face-detect", [files["astronaut"]])
    card(driver, 0, "succeeded")
    boxes = wait(driver, lambda d: css(d, ".output[data-index='0'] svg.boxes rect.box"), "a face's box drawn")
    assert len(boxes) >= 1


def test_a_blurred_photo_is_shown_from_its_output_file(
    driver: Any, stack: Stack, files: dict[str, Path]
) -> None:
    open_view(driver, stack.base_url, "submit")
    submit_files(driver, "face-blur", [files["astronaut"]])
    card(driver, 0, "succeeded")
    shown = "return arguments[0].complete && arguments[0].naturalWidth"
    blurred = one(driver, ".output[data-index='0'] .output-files img.output-file", "the blurred JPEG")
    wait(driver, lambda d: d.execute_script(shown, blurred) > 0, "the blurred JPEG decoded")
    assert blurred.get_attribute("src").startswith("blob:")  # fetched with the key in a header
    assert "image/jpeg" in one(driver, ".output[data-index='0'] .output-files .file-name").text
    assert not page_errors(driver)


def test_texts_show_their_dimension_and_similarities(driver: Any, stack: Stack) -> None:
    from selenium.webdriver.support.ui import Select

    open_view(driver, stack.base_url, "submit")
    one(driver, "select[name=pipeline] option[value='text-embed']")
    Select(one(driver, "select[name=pipeline]")).select_by_value("text-embed")
    texts = "a photo of a cat\na picture of a kitten\nthe stock market fell"
    one(driver, "textarea[name=texts]").send_keys(texts)
    one(driver, "button[type=submit].primary").click()
    sims = lambda d: [e.text for e in css(d, ".matrix td.sim")]  # noqa: E731
    cells = wait(driver, lambda d: len(sims(d)) == 9 and sims(d), "a 3x3 similarity matrix")
    matrix = [[float(x) for x in cells[i * 3 : i * 3 + 3]] for i in range(3)]
    assert all(abs(matrix[i][i] - 1) < 1e-3 for i in range(3))
    assert matrix[0][1] > matrix[0][2]  # a cat is nearer a kitten than the stock market
    assert "dimension 384" in one(driver, ".output .embedding").text
    assert "kitten" in one(driver, ".output[data-index='1'] .text-input").text


def test_a_video_shows_a_timeline_of_frames(driver: Any, stack: Stack, files: dict[str, Path]) -> None:
    open_view(driver, stack.base_url, "submit")
    from selenium.webdriver.support.ui import Select

    one(driver, "select[name=pipeline] option[value='video-classify']")  # the pipelines loaded
    Select(one(driver, "select[name=pipeline]")).select_by_value("video-classify")
    one(driver, "input[name=fps]").send_keys("2")
    submit_files(driver, "video-classify", [files["video"]])
    card(driver, 0, "succeeded")
    cells = css(driver, ".output[data-index='0'] .timeline .cell")
    assert len(cells) == 6, len(cells)  # 3 s at 2 frames a second
    assert "cat" in cells[0].get_attribute("title") and "espresso" in cells[-1].get_attribute("title")


def long_job(stack: Stack, tmp: Path) -> str:
    video = make_video(seconds=30, fps=10)
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        answer = client.post(
            "/v1/pipelines/video-classify/jobs",
            files={"files": ("long.mp4", video, "video/mp4")},
            data={"options": json.dumps({"fps": 10}), "keep_inputs": "true"},
        )
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_cancel_a_long_job(driver: Any, stack: Stack, tmp_path: Path) -> None:
    job_id = long_job(stack, tmp_path)
    open_view(driver, stack.base_url, f"job/{job_id}")
    one(driver, "button.cancel").click()
    wait(driver, lambda d: "canceled" in one(d, ".job-status").text, "the job canceled")
    assert not one(driver, "button.cancel").is_displayed()


def test_the_job_list_filters_by_status(driver: Any, stack: Stack, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    canceled = long_job(stack, tmp_path)
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        assert client.post(f"/v1/jobs/{canceled}/cancel").status_code == 200
        done = client.post(
            "/v1/pipelines/text-embed/jobs",
            json={"inputs": [{"text": "hello"}]},
            headers={"Prefer": "wait=60"},
        ).json()
        assert done["status"] == "succeeded"
    open_view(driver, stack.base_url, "jobs")
    wait(driver, lambda d: css(d, f"tr[data-id='{done['id']}']"), "the finished job listed")
    screenshots(driver, "jobs")
    Select(one(driver, "select[name=status]")).select_by_value("canceled")
    statuses = lambda d: {r.get_attribute("data-status") for r in css(d, "tbody tr[data-id]")}  # noqa: E731
    wait(
        driver,
        lambda d: statuses(d) == {"canceled"} and css(d, f"tr[data-id='{canceled}']"),
        "only canceled jobs",
    )
    assert not css(driver, f"tr[data-id='{done['id']}']")
    one(driver, f"tr[data-id='{canceled}'] a.job-link").click()
    wait(driver, lambda d: "canceled" in one(d, ".job-status").text, "the job's view from the list")


def test_hostile_names_and_metadata_stay_text(driver: Any, stack: Stack, files: dict[str, Path]) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    open_view(driver, stack.base_url, "submit")
    job_id = submit_files(driver, "image-classify", [files["xss"]], metadata=XSS_META)
    wait(driver, lambda d: one(d, ".output[data-index='0'] .source").text == XSS_NAME, "the name, as text")
    assert XSS_META["note"] in one(driver, "code.metadata").text
    open_view(driver, stack.base_url, "jobs")
    wait(
        driver, lambda d: XSS_META["note"] in one(d, f"tr[data-id='{job_id}'] .meta").text, "metadata listed"
    )
    for view in ("jobs", f"job/{job_id}"):
        open_view(driver, stack.base_url, view)
        one(driver, ".output .source" if view.startswith("job/") else f"tr[data-id='{job_id}']")
        injected = driver.execute_script(
            "return document.querySelectorAll('img[src=\"x\"], main script, b[onmouseover], [onerror]').length"
        )
        assert injected == 0
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 - no dialog opened


def test_the_system_view_shows_every_worker_and_the_backlog_under_load(driver: Any, stack: Stack) -> None:
    import threading

    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        workers = client.get("/v1/status").json()["workers"]
    assert workers
    open_view(driver, stack.base_url, "system")
    ids = {w["id"] for w in workers}
    wait(
        driver, lambda d: {r.get_attribute("data-worker") for r in css(d, "tr.worker")} == ids, "every worker"
    )
    assert css(driver, "svg.graph .node[data-stage='classify']")
    photo = photo_bytes("coffee.png", "JPEG", FHD)

    def load() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            for _ in range(4):
                files = [("files", (f"p{i}.jpg", photo, "image/jpeg")) for i in range(40)]
                assert client.post("/v1/pipelines/image-classify/jobs", files=files).status_code == 202

    loader = threading.Thread(target=load)
    loader.start()
    try:
        backlog = lambda d: int(one(d, "#total-backlog").get_attribute("data-backlog"))  # noqa: E731
        peak = wait(driver, lambda d: backlog(d) > 0 and backlog(d), "the backlog to rise")
        wait(driver, lambda d: backlog(d) == 0, "the backlog to fall back to 0", timeout_s=240)
        screenshots(driver, "system")  # its charts show the rise and the fall
    finally:
        loader.join()
    assert peak > 0
    assert page_errors(driver) == []
