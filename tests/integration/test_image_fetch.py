"""`image_url` inputs fetched by the decode stage, from HTTP servers on 127.0.0.1 (and 127.0.0.2) only.

The SSRF guard is exercised with a fake resolver: names resolve to loopback addresses
the test owns, so no traffic ever leaves the machine, even if the guard were broken.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared import netguard
from shared.errors import ItemError
from shared.settings import Settings
from tests.support.photos import photo_bytes
from workers import runtime
from workers.fetch import FetchPolicy, fetch, human_bytes
from workers.transforms import image
from workers.transforms.image import InputConfig, decode_resize_crop, load_image_bytes

CAT = photo_bytes("chelsea.png")
ALLOW = netguard.AddressPolicy(allow_private=True)


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: bool = True  # send Content-Length (else the body ends when the connection closes)
    hold: threading.Event | None = None  # wait for this before answering


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up early (a body over the cap) is expected here


class Server:
    """An HTTP server on a loopback address that answers from `routes` and records each request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(self.path, Route(status=404, body=b"not here"))
                if route.hold is not None:
                    route.hold.wait(30)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _QuietServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def image(self, path: str, body: bytes = CAT, content_type: str = "image/jpeg", **kwargs: Any) -> str:
        self.routes[path] = Route(body=body, headers={"Content-Type": content_type}, **kwargs)
        return self.base + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = Route(status=status, headers={"Location": location})
        return self.base + path

    def close(self) -> None:
        for route in self.routes.values():
            if route.hold is not None:
                route.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


def policy(**overrides: Any) -> FetchPolicy:
    values: dict[str, Any] = {"timeout_s": 10.0, "max_bytes": 1 << 20, "max_redirects": 3, "address": ALLOW}
    values.update(overrides)
    return FetchPolicy(**values)


def config(**overrides: Any) -> InputConfig:
    return InputConfig(fetch=policy(**overrides), max_bytes=1 << 20)


def failure(call: Callable[[], Any]) -> str:
    with pytest.raises(ItemError) as info:
        call()
    return str(info.value)


@pytest.fixture
def configured() -> Iterator[Callable[[InputConfig], None]]:
    """Set this process's image input configuration (as a worker's settings would); reset after."""
    yield image.configure
    image.configure(None)


def test_the_decode_stage_fetches_an_image_url(
    server: Server, configured: Callable[[InputConfig], None]
) -> None:
    url = server.image("/photos/cat.jpg?v=1")
    configured(config())
    crop = decode_resize_crop({"image_url": url})
    assert isinstance(crop, np.ndarray) and crop.shape == (224, 224, 3)
    assert np.array_equal(crop, decode_resize_crop({"image": CAT}))
    [(path, headers)] = server.requests
    assert path == "/photos/cat.jpg?v=1"
    assert headers["Host"] == f"127.0.0.1:{server.port}" and "image/*" in headers["Accept"]
    configured(config(address=netguard.AddressPolicy()))  # the stage obeys the configured policy
    assert "loopback address, which is refused" in failure(lambda: decode_resize_crop({"image_url": url}))
    assert len(server.requests) == 1


def test_the_preprocess_worker_configures_the_stage_with_its_settings(
    server: Server, configured: Callable[[InputConfig], None]
) -> None:
    url = server.image("/cat.jpg")
    configured(None)  # unconfigured: the defaults refuse private addresses
    assert "refused" in failure(lambda: load_image_bytes({"image_url": url}))
    functions = {"workers.transforms.image:decode_resize_crop": decode_resize_crop}
    runtime.configure_stage_modules(functions, Settings(fetch_allow_private=True, fetch_timeout_s=7.5))
    assert load_image_bytes({"image_url": url}) == CAT
    assert image.input_config().fetch.timeout_s == 7.5 and image.input_config().fetch.address.allow_private


def test_a_missing_image_fails_with_the_status(server: Server) -> None:
    message = failure(lambda: load_image_bytes({"image_url": server.base + "/gone.jpg"}, config()))
    assert message == "image_url: server answered 404"
    server.routes["/down"] = Route(status=503, body=b"busy", headers={"Content-Type": "image/jpeg"})
    assert failure(lambda: fetch(server.base + "/down", policy())) == "image_url: server answered 503"


def test_a_page_is_not_an_image(server: Server) -> None:
    url = server.image("/page", body=b"<html>hi</html>", content_type="text/html; charset=utf-8")
    assert failure(lambda: fetch(url, policy())) == "image_url: content-type text/html is not an image"
    server.routes["/untyped"] = Route(body=CAT)
    assert "gave no content-type" in failure(lambda: fetch(server.base + "/untyped", policy()))


@pytest.mark.parametrize("length", [True, False], ids=["declared", "streamed"])
def test_an_image_over_the_cap_is_cut_off(server: Server, length: bool) -> None:
    url = server.image("/big.jpg", body=b"\xff" * 5000, length=length)
    assert failure(lambda: fetch(url, policy(max_bytes=4096))) == "image_url: larger than 4 KiB"
    assert fetch(url, policy(max_bytes=5000)) == b"\xff" * 5000  # exactly at the cap: fine
    assert human_bytes(20 * 1024 * 1024) == "20 MiB" and human_bytes(1000) == "1000 bytes"


def test_loopback_is_refused_without_allow_private_and_nothing_reaches_the_server(server: Server) -> None:
    url = server.image("/cat.jpg")
    refused = failure(lambda: fetch(url, policy(address=netguard.AddressPolicy())))
    assert refused.startswith("image_url: 127.0.0.1 is a loopback address, which is refused")
    strict = policy(address=netguard.AddressPolicy(), resolver=lambda host, port: ["127.0.0.1"])
    refused = failure(lambda: fetch(f"http://cat-pics.test:{server.port}/cat.jpg", strict))
    assert "cat-pics.test (127.0.0.1) is a loopback address" in refused
    for spelling in ("127.1", "0x7f000001", "2130706433", "[::ffff:127.0.0.1]"):
        refused = failure(lambda: fetch(f"http://{spelling}:{server.port}/cat.jpg", strict))
        assert "address, which is refused" in refused, spelling
    assert server.requests == []


def test_the_connection_goes_to_the_address_that_was_checked(server: Server) -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    url = server.image("/cat.jpg").replace("127.0.0.1", "cat-pics.test")
    assert fetch(url, policy(resolver=resolver)) == CAT
    assert asked == ["cat-pics.test"]  # resolved once, by the guard; the client never looked the name up
    [(_, headers)] = server.requests
    assert headers["Host"] == f"cat-pics.test:{server.port}"


def test_numeric_spellings_of_an_allowed_address_reach_it(server: Server) -> None:
    server.image("/cat.jpg")
    assert fetch(f"http://127.1:{server.port}/cat.jpg", policy()) == CAT
    assert fetch(f"http://2130706433:{server.port}/cat.jpg", policy()) == CAT


def test_redirects_are_followed_a_few_times(server: Server) -> None:
    server.image("/cat.jpg")
    server.redirect("/r1", "/cat.jpg", 301)
    server.redirect("/r2", server.base + "/r1", 307)
    assert fetch(server.base + "/r2", policy()) == CAT
    assert [p for p, _ in server.requests] == ["/r2", "/r1", "/cat.jpg"]
    server.redirect("/loop", "/loop")
    assert (
        failure(lambda: fetch(server.base + "/loop", policy()))
        == "image_url: too many redirects (more than 3)"
    )
    assert [p for p, _ in server.requests].count("/loop") == 4  # the first request and 3 redirects
    message = failure(lambda: fetch(server.base + "/r1", policy(max_redirects=0)))
    assert message == "image_url: server answered 301 (a redirect); redirects are not followed"
    server.redirect("/to-ftp", "ftp://127.0.0.1/cat.jpg")
    assert "only http and https" in failure(lambda: fetch(server.base + "/to-ftp", policy()))


def test_each_redirect_target_is_checked_again(server: Server) -> None:
    """127.0.0.1 is allowed; a redirect to a name that resolves to 127.0.0.2 is not, and that
    server (ours too) never sees a request."""
    other = Server("127.0.0.2")
    try:
        other.image("/secret.jpg")
        server.redirect("/hop", f"http://internal.test:{other.port}/secret.jpg")
        guarded = policy(
            address=netguard.AddressPolicy(allowed=netguard.networks(["127.0.0.1/32"])),
            resolver=lambda host, port: {"internal.test": ["127.0.0.2"]}[host],
        )
        message = failure(lambda: fetch(server.base + "/hop", guarded))
        assert message.startswith(
            "image_url: internal.test (127.0.0.2) is a loopback address, which is refused"
        )
        assert [p for p, _ in server.requests] == ["/hop"] and other.requests == []
        # The same redirect with the address allowed reaches it: the refusal came from the check.
        assert fetch(server.base + "/hop", policy(resolver=guarded.resolver)) == CAT
        assert [p for p, _ in other.requests] == ["/secret.jpg"]
    finally:
        other.close()


def test_a_server_that_does_not_answer_times_out(server: Server) -> None:
    hold = threading.Event()
    url = server.image("/stuck.jpg", hold=hold)
    try:
        assert failure(lambda: fetch(url, policy(timeout_s=0.3))) == "image_url: timed out after 0.3 s"
    finally:
        hold.set()


def test_nothing_listening_is_a_clear_failure(server: Server) -> None:
    port = server.port
    server.close()
    message = failure(lambda: fetch(f"http://127.0.0.1:{port}/cat.jpg", policy()))
    assert message.startswith("image_url: cannot connect to 127.0.0.1")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url at all", "only http and https"),
        ("http://user:pw@127.0.0.1/x.jpg", "credentials"),
        ("http:///x.jpg", "no host"),
    ],
)
def test_malformed_urls_fail_before_any_request(server: Server, url: str, fragment: str) -> None:
    assert fragment in failure(lambda: fetch(url, policy()))
    assert server.requests == []


@pytest.fixture
def tls_server(tmp_path: Path, server: Server) -> Iterator[tuple[Server, ssl.SSLContext]]:
    """`server`, now speaking TLS with a self-signed certificate for cat-pics.test, and a client
    context that trusts that certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=cat-pics.test",
            "-addext",
            "subjectAltName=DNS:cat-pics.test",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server.httpd.socket = server_side.wrap_socket(server.httpd.socket, server_side=True)
    yield server, ssl.create_default_context(cafile=str(cert))


def test_https_connects_to_the_checked_address_and_verifies_the_name(
    tls_server: tuple[Server, ssl.SSLContext],
) -> None:
    server, trust = tls_server
    server.image("/cat.jpg")
    to_loopback = policy(resolver=lambda host, port: ["127.0.0.1"], verify=trust)
    assert fetch(f"https://cat-pics.test:{server.port}/cat.jpg", to_loopback) == CAT
    [(_, headers)] = server.requests
    assert headers["Host"] == f"cat-pics.test:{server.port}"
    # The certificate is checked against the name in the URL, not the address connected to.
    message = failure(lambda: fetch(f"https://other.test:{server.port}/cat.jpg", to_loopback))
    assert message.startswith("image_url: cannot connect to other.test") and "certificate" in message
    message = failure(lambda: fetch(f"https://127.0.0.1:{server.port}/cat.jpg", to_loopback))
    assert "certificate" in message
