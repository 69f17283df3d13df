"""End to end: images by reference. A folder under the stack's DLPIPE_DATA_ROOT, and an
`image_url` served from 127.0.0.1 (the stack runs with DLPIPE_FETCH_ALLOW_PRIVATE=true)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.support.classify import CAT_CLASSES, COFFEE_CLASSES, submit, top1, wait_final
from tests.support.photos import photo_bytes

pytestmark = pytest.mark.e2e


class Photos:
    """Serves {path: (content type, bytes)} on 127.0.0.1; anything else is a 404."""

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in files:
                    self.send_error(404)
                    return
                content_type, body = files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def photos() -> Iterator[Photos]:
    server = Photos(
        {"/cat.jpg": ("image/jpeg", photo_bytes("chelsea.png")), "/page": ("text/html", b"<p>x</p>")}
    )
    yield server
    server.close()


def test_a_folder_of_three_photos_gives_three_outputs_with_their_names(
    client: httpx.Client, stack: Stack
) -> None:
    assert stack.data_root is not None
    album = stack.data_root / "album"
    album.mkdir()
    (album / "1-cat.jpg").write_bytes(photo_bytes("chelsea.png"))
    (album / "2-coffee.png").write_bytes(photo_bytes("coffee.png", fmt=None))
    (album / "3-cat-again.webp").write_bytes(photo_bytes("chelsea.png", fmt="WEBP"))
    (album / "readme.txt").write_text("not an image")
    job = submit(client, [{"path": "album"}])
    assert job["progress"]["total"] == 3
    done = wait_final(client, job["id"])
    assert done["status"] == "succeeded", done
    outputs = done["outputs"]
    names = ["album/1-cat.jpg", "album/2-coffee.png", "album/3-cat-again.webp"]
    assert [o["source"] for o in outputs] == names
    assert all(o["status"] == "succeeded" for o in outputs), outputs
    assert top1(outputs[0]) in CAT_CLASSES and top1(outputs[2]) in CAT_CLASSES
    assert top1(outputs[1]) in COFFEE_CLASSES


def test_paths_out_of_the_data_root_are_refused(client: httpx.Client) -> None:
    response = client.post("/v1/pipelines/image-classify/jobs", json={"inputs": [{"path": "../stack.log"}]})
    assert response.status_code == 422
    assert response.json() == {"detail": "inputs[0].path: outside the data root", "field": "inputs[0].path"}


def test_an_image_url_on_loopback_is_fetched_and_classified(client: httpx.Client, photos: Photos) -> None:
    urls = [f"{photos.base}/cat.jpg", f"{photos.base}/missing.jpg", f"{photos.base}/page"]
    done = wait_final(client, submit(client, [{"image_url": url} for url in urls])["id"])
    assert done["status"] == "succeeded", done
    cat, missing, page = done["outputs"]
    assert cat["status"] == "succeeded" and top1(cat) in CAT_CLASSES and cat["source"] == urls[0]
    assert missing["status"] == "failed" and missing["error"] == "image_url: server answered 404"
    assert page["status"] == "failed" and page["error"] == "image_url: content-type text/html is not an image"
    assert [o["source"] for o in done["outputs"]] == urls
