"""The connection protocol's pure parts (services/api/connection_limits.py), and the seam with
uvicorn's httptools protocol it subclasses (services/api/connections.py): uvicorn is pinned,
and an upgrade that moves what the subclass relies on must fail here, loudly.
(Its behaviour against clients: tests/integration/test_api_connections.py.)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import resource
import subprocess
import sys

import httptools
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.server import ServerState

from services.api.connection_limits import ConnectionLimits, error_answer
from services.api.connections import GuardedHttpToolsProtocol
from shared.settings import Settings
from tests.conftest import REPO

LIMITS = ConnectionLimits(
    max_header_bytes=32768,
    max_headers=100,
    header_timeout_s=10,
    idle_timeout_s=5,
    body_timeout_s=30,
    body_min_rate=10000,
    max_connections=4096,
    drain_max_bytes=1 << 27,
    drain_timeout_s=10,
)


def params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_uvicorn_methods_the_protocol_overrides_or_calls_keep_their_signatures() -> None:
    base = httptools_impl.HttpToolsProtocol
    expected = {
        "__init__": ["self", "config", "server_state", "app_state", "_loop"],
        "connection_made": ["self", "transport"],
        "connection_lost": ["self", "exc"],
        "data_received": ["self", "data"],
        "shutdown": ["self"],
        "timeout_keep_alive_handler": ["self"],
        "_unset_keepalive_if_required": ["self"],
        "_unsupported_upgrade_warning": ["self"],
        "send_400_response": ["self", "msg"],
        "on_message_begin": ["self"],
        "on_header": ["self", "name", "value"],
        "on_headers_complete": ["self"],
        "on_body": ["self", "body"],
        "on_message_complete": ["self"],
        "on_response_complete": ["self"],
    }
    assert {name: params(getattr(base, name)) for name in expected} == expected
    assert params(httptools_impl.RequestResponseCycle.__init__)[-2:] == ["keep_alive", "on_response"]
    assert params(FlowControl.resume_reading) == ["self"]
    assert httptools_impl.STATUS_LINE[431] == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    assert issubclass(httptools.HttpParserCallbackError, httptools.HttpParserError)
    # The cycle closes the transport uvicorn's protocol gave it (our guard) and then reports back.
    send = inspect.getsource(httptools_impl.RequestResponseCycle.send)
    assert "self.transport.close()" in send and "self.on_response()" in send
    assert "transport=self.transport" in inspect.getsource(base.on_headers_complete)


def test_the_protocol_builds_through_uvicorns_config_with_the_attributes_it_uses() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
        pass

    config = Config(app, http=GuardedHttpToolsProtocol.factory(LIMITS), ws="none")
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
    finally:
        loop.close()
    assert isinstance(protocol, GuardedHttpToolsProtocol) and protocol.limits == LIMITS
    assert protocol.timeout_keep_alive == LIMITS.idle_timeout_s
    for name in (
        "timeout_keep_alive_task",
        "connections",
        "cycle",
        "flow",
        "parser",
        "headers",
        "loop",
        "expect_100_continue",
        "client",
        "server_state",
        "logger",
    ):
        assert hasattr(protocol, name), name
    assert hasattr(protocol.server_state, "default_headers")
    cycle_init = inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    for name in (
        "self.disconnected",
        "self.response_started",
        "self.response_complete",
        "self.message_event",
    ):
        assert name in cycle_init, name


def test_the_protocol_factory_pickles_for_several_api_processes() -> None:
    factory = pickle.loads(pickle.dumps(GuardedHttpToolsProtocol.factory(LIMITS)))
    assert factory.func is GuardedHttpToolsProtocol and factory.keywords == {"limits": LIMITS}


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings(
        api_max_header_bytes=2048,
        api_max_headers=7,
        api_header_timeout_s=1.5,
        api_idle_timeout_s=2,
        api_body_timeout_s=3,
        api_body_min_rate=50,
        api_max_connections=9,
        api_drain_max_bytes=0,
        api_drain_timeout_s=4,
    )
    assert ConnectionLimits.from_settings(settings) == ConnectionLimits(2048, 7, 1.5, 2, 3, 50, 9, 0, 4)
    assert ConnectionLimits.from_settings(Settings()) == LIMITS  # the defaults above


def test_a_body_gets_its_grace_plus_a_second_per_min_rate_bytes() -> None:
    assert LIMITS.body_due(100.0, 0) == 130.0  # 30 s of grace
    assert LIMITS.body_due(100.0, 50_000) == 135.0  # + 5 s for 50,000 bytes at 10,000 bytes/s


def test_an_error_answer_is_the_apis_json_error_and_closes() -> None:
    raw = error_answer(503, "full", None, [(b"server", b"uvicorn")], [(b"retry-after", b"5")])
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert lines[1:] == [
        b"server: uvicorn",
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        b"retry-after: 5",
    ]
    assert json.loads(body) == {"detail": "full", "field": None}


def fit_in_process(soft: int, hard: int, max_connections: int) -> list[int]:
    """connection_limits() in a fresh process whose open-files limit is (soft, hard): its cap,
    and the soft limit after."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from services.api.connection_limits import connection_limits\n"
        "from shared.settings import Settings\n"
        f"limits = connection_limits(Settings(api_max_connections={max_connections}))\n"
        "print(limits.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return [int(n) for n in done.stdout.split()]


@pytest.mark.parametrize(
    ("soft", "hard", "cap", "expected"),
    [
        (512, 4096, 1000, [1000, 4096]),  # raised to the hard limit: the cap fits
        (512, 700, 1000, [700 - 256, 700]),  # even the hard limit is short: the cap is lowered
        (4096, 4096, 100, [100, 4096]),  # enough already: untouched
    ],
)
def test_the_open_files_limit_is_raised_or_the_cap_lowered(
    soft: int, hard: int, cap: int, expected: list[int]
) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        pytest.skip("this machine's hard open-files limit is lower than the test's")
    assert fit_in_process(soft, hard, cap) == expected
