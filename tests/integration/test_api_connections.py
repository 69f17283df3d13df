"""Hostile and clumsy clients against a real `dlpipe api` (services/api/connections.py), over
raw sockets where the client misbehaves, with short limits set through the environment:

- a giant request head is cut at DLPIPE_API_MAX_HEADER_BYTES with 431 while the event loop
  goes on serving; too many header fields are 431 too;
- silent connections are closed after the idle timeout, a head that does not end in time
  gets 408, a body slower than the minimum rate is cut with 408; a long poll and a
  `Prefer: wait` submit, waiting on the API rather than on the client, are not;
- past DLPIPE_API_MAX_CONNECTIONS a new connection gets 503 with Retry-After, and is served
  again once connections close;
- urllib POSTing 70 MB (over DLPIPE_MAX_BODY_BYTES) reads the 413, not a reset;
- a kept-alive connection serves a second request.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.settings import DEFAULT_PIPELINES_FILE
from tests.support.apiproc import ApiProcess, api_process
from tests.support.waiting import wait_until

TIMEOUT_S = 1.0  # header, idle and body-grace timeouts of the API under test
SLACK_S = 4.0  # this busy 2-core machine's scheduling, on top of a timeout
SUBMIT = "/v1/pipelines/text-embed/jobs"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[ApiProcess]:
    timeouts = str(TIMEOUT_S)
    with api_process(
        tmp_path_factory.mktemp("api"),
        redis_server,
        pipelines_file=str(DEFAULT_PIPELINES_FILE),
        api_header_timeout_s=timeouts,
        api_idle_timeout_s=timeouts,
        api_body_timeout_s=timeouts,
        api_body_min_rate="1000",
    ) as running:
        yield running


# -- raw HTTP ---------------------------------------------------------------------------


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def read_to_close(sock: socket.socket, timeout_s: float = TIMEOUT_S + SLACK_S) -> bytes:
    """Everything the server sends until it closes (fails if it has not within timeout_s)."""
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def recv(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("closed by the server")
    return data


def read_some_answer(sock: socket.socket) -> bytes:
    """One answer with a JSON body, the connection left open."""
    sock.settimeout(TIMEOUT_S + SLACK_S)
    data = b""
    while not data.endswith(b"}"):
        data += recv(sock)
    return data


def get(sock: socket.socket, path: str = "/healthz") -> tuple[int, Any]:
    """One keep-alive GET on `sock`: the status and the JSON body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers, _ = parse(head + b"\r\n\r\n")
    while len(body) < int(headers["content-length"]):
        body += recv(sock)
    return status, json.loads(body)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (a read gets EOF), without blocking."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server sent something (or closed) within timeout_s (poll: any fd number)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


# -- the request head -----------------------------------------------------------------------


def test_a_giant_header_is_cut_with_431_while_the_loop_goes_on(api: ApiProcess) -> None:
    answer: dict[str, Any] = {}

    def send_60_mb_header() -> None:
        try:
            with api.connect() as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
                chunk = b"a" * (1 << 20)
                for _ in range(60):
                    sock.sendall(chunk)
                sock.sendall(b"\r\n\r\n")
                answer["raw"] = read_to_close(sock)
        except OSError as exc:
            answer["raw"] = repr(exc).encode()

    sender = threading.Thread(target=send_60_mb_header)
    latencies = []
    with api.connect() as probe:
        sender.start()
        while sender.is_alive() or len(latencies) < 3:
            asked = time.monotonic()
            assert get(probe) == (200, {"status": "ok"})
            latencies.append(time.monotonic() - asked)
    sender.join()
    assert max(latencies) < 0.5, latencies  # unfixed: ~3 s, httptools joining the header in Python
    assert answer["raw"].startswith(b"HTTP/1.1 431 "), answer["raw"][:200]
    _, headers, body = parse(answer["raw"])
    assert headers["connection"] == "close"
    assert body == {
        "detail": "request line and headers over 32768 bytes (DLPIPE_API_MAX_HEADER_BYTES)",
        "field": "headers",
    }


def test_too_many_header_fields_get_431(api: ApiProcess) -> None:
    def head(fields: int) -> bytes:
        return (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-F%d: v\r\n" % i for i in range(fields))
            + b"\r\n"
        )

    with api.connect() as sock:
        sock.sendall(head(99))  # with Host: 100, the limit
        assert parse(read_some_answer(sock))[0] == 200
    for fields in (100, 100_000):
        with api.connect() as sock:
            sock.sendall(head(fields))
            status, _, body = parse(read_to_close(sock))
            assert status == 431
            assert body == {
                "detail": "more than 100 header fields (DLPIPE_API_MAX_HEADERS)",
                "field": "headers",
            }


def test_giant_trailers_after_a_chunked_body_get_431(api: ApiProcess) -> None:
    with api.connect() as sock:
        sock.sendall(
            f"POST {SUBMIT} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ".encode()
        )
        sock.sendall(b"a" * (1 << 20))
        status, _, body = parse(read_to_close(sock))
    assert status == 431
    assert body == {
        "detail": "chunk framing or trailers over 32768 bytes (DLPIPE_API_MAX_HEADER_BYTES)",
        "field": "headers",
    }


def test_a_head_that_does_not_end_in_time_gets_408(api: ApiProcess) -> None:
    with api.connect() as silent, api.connect() as trickle:
        started = time.monotonic()
        silent.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        trickle.sendall(b"G")
        sent = 1
        while not readable(trickle, 0.2):  # a byte every 0.2 s: never idle
            trickle.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa"[sent : sent + 1]
            )
            sent += 1
            assert time.monotonic() - started < TIMEOUT_S + SLACK_S, "no answer to the trickled head"
        for sock in (trickle, silent):
            status, _, body = parse(read_to_close(sock))
            assert status == 408, body
            assert body == {
                "detail": "request line and headers not received within 1 s (DLPIPE_API_HEADER_TIMEOUT_S)",
                "field": "headers",
            }
        assert time.monotonic() - started >= TIMEOUT_S


# -- idle connections -----------------------------------------------------------------------


def test_silent_connections_are_closed_after_the_idle_timeout(api: ApiProcess) -> None:
    socks = [api.connect() for _ in range(200)]
    try:
        opened = time.monotonic()
        wait_until(
            lambda: all(closed_by_server(s) for s in socks), TIMEOUT_S + SLACK_S, "200 silent sockets closed"
        )
        assert time.monotonic() - opened >= TIMEOUT_S * 0.9
    finally:
        for sock in socks:
            sock.close()


def test_pipelined_requests_get_an_answer_each(api: ApiProcess) -> None:
    with api.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 3)
        answers = b""
        sock.settimeout(TIMEOUT_S + SLACK_S)
        while answers.count(b'{"status":"ok"}') < 3:
            answers += recv(sock)
        assert answers.count(b"HTTP/1.1 200 OK") == 3


def test_a_kept_alive_connection_serves_a_second_request_then_idles_out(api: ApiProcess) -> None:
    with api.connect() as sock:
        assert get(sock) == (200, {"status": "ok"})
        assert get(sock) == (200, {"status": "ok"})
        answered = time.monotonic()
        wait_until(
            lambda: closed_by_server(sock), TIMEOUT_S + SLACK_S, "the idle kept-alive connection closed"
        )
        assert time.monotonic() - answered >= TIMEOUT_S * 0.9


# -- bodies -----------------------------------------------------------------------------------


def post_head(length: int, extra: str = "") -> bytes:
    return (
        f"POST {SUBMIT} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def test_a_body_slower_than_the_minimum_rate_is_cut_with_408(api: ApiProcess) -> None:
    with api.connect() as sock:
        sock.sendall(post_head(1000))
        started = time.monotonic()
        while not readable(sock, 0.25):  # 4 bytes/s, under the 1000 bytes/s floor
            sock.sendall(b" ")
            assert time.monotonic() - started < TIMEOUT_S + SLACK_S, "the slow body was never cut"
        status, _, body = parse(read_to_close(sock))
    assert time.monotonic() - started >= TIMEOUT_S
    assert status == 408 and body["field"] == "body", body
    assert "(DLPIPE_API_BODY_TIMEOUT_S, DLPIPE_API_BODY_MIN_RATE)" in body["detail"]
    # The route reading that body sees its client gone: no bug, no traceback in the log.
    wait_until(lambda: "went away before its request was read" in api.log_text(), SLACK_S, "the app told")
    assert "Traceback" not in api.log_text()


def test_a_body_above_the_minimum_rate_may_take_longer_than_the_grace(api: ApiProcess) -> None:
    job = json.dumps({"inputs": [{"text": "slow but steady"}]}).encode().ljust(3000)
    with api.connect() as sock:
        sock.sendall(post_head(len(job)))
        started = time.monotonic()
        for at in range(0, len(job), 300):  # 1500 bytes/s for 2 s: over the grace, above the floor
            assert not readable(sock, 0.2), sock.recv(65536)
            sock.sendall(job[at : at + 300])
        assert time.monotonic() - started > TIMEOUT_S
        assert parse(read_some_answer(sock))[0] == 202


def test_a_long_poll_and_a_prefer_wait_submit_are_not_cut(api: ApiProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=20) as http:
        job = http.post(SUBMIT, json={"inputs": [{"text": "nobody works here"}]}).json()  # no worker: queued
        answers: dict[str, httpx.Response] = {}
        waits = {
            "poll": lambda: http.get(f"/v1/jobs/{job['id']}", params={"wait_s": 3}),
            "submit": lambda: http.post(
                SUBMIT, json={"inputs": [{"text": "x"}]}, headers={"Prefer": "wait=3"}
            ),
        }
        threads = [
            threading.Thread(target=lambda k=k, f=f: answers.__setitem__(k, f())) for k, f in waits.items()
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert time.monotonic() - started >= 3 * TIMEOUT_S  # three idle (and header) timeouts
        assert answers["poll"].status_code == 200 and answers["poll"].json()["status"] == "queued"
        assert answers["submit"].status_code == 202, answers["submit"].text


def test_urllib_posting_70_mb_reads_the_413(api: ApiProcess) -> None:
    body = b"{" + b" " * (70 * 1024 * 1024) + b"}"
    request = urllib.request.Request(
        api.url + SUBMIT, data=body, headers={"Content-Type": "application/json"}
    )
    for _ in range(10):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert json.loads(refused.value.read()) == {
            "detail": "request body larger than 67108864 bytes (DLPIPE_MAX_BODY_BYTES)",
            "field": "body",
        }


def test_an_expect_100_client_answered_before_the_100_is_closed_at_once(api: ApiProcess) -> None:
    with api.connect() as sock:
        sock.sendall(post_head(100 * 1024 * 1024, "Expect: 100-continue\r\n"))
        status, _, body = parse(read_to_close(sock))
        assert status == 413 and body["field"] == "body"

        def reset() -> bool:  # closed, not lingering: what it sends now is answered with a reset
            try:
                sock.sendall(b"x" * 1000)
                sock.recv(1)
            except (ConnectionResetError, BrokenPipeError):
                return True
            return False

        wait_until(reset, SLACK_S, "a reset from the closed connection")


# -- the connection cap ---------------------------------------------------------------------


@pytest.fixture
def capped(tmp_path: Path, redis_server: str) -> Iterator[ApiProcess]:
    with api_process(tmp_path, redis_server, api_max_connections="3", api_idle_timeout_s="60") as running:
        yield running


def test_past_the_connection_cap_new_connections_get_503_until_some_close(capped: ApiProcess) -> None:
    held = [capped.connect() for _ in range(3)]

    def refused() -> dict[str, Any] | None:
        with capped.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body = parse(read_to_close(sock))
        return status == 503 and headers["retry-after"] == "5" and body

    try:
        body = wait_until(refused, SLACK_S, "a 503 past the cap")
        assert body == {
            "detail": "too many open connections (at most 3, DLPIPE_API_MAX_CONNECTIONS); retry later",
            "field": None,
        }
        assert get(held[0]) == (200, {"status": "ok"})  # those within the cap are served
    finally:
        for sock in held:
            sock.close()
    wait_until(
        lambda: httpx.get(capped.url + "/healthz", timeout=2).status_code == 200, SLACK_S, "served again"
    )
