"""The console's files (/ui/): served by name only, with a strict Content-Security-Policy, no key
needed to load them; the page loads nothing from elsewhere and builds the DOM without parsing data
as HTML (checked in the source here; in a browser by tests/e2e/test_console*.py)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import fakeredis
import httpx
import pytest
from pydantic import SecretStr

from services.api.app import create_app
from services.api.routers import ui
from shared.settings import Settings
from tests.support.api import fake_factory, running
from tests.support.links import links_of

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(ui.FOLDER.glob("*.js"))


def csp_of(response: httpx.Response) -> dict[str, str]:
    parts = [p.strip() for p in response.headers["content-security-policy"].split(";")]
    return {p.split(" ", 1)[0]: p.split(" ", 1)[1] for p in parts if p}


async def test_the_page_and_its_files_are_served_with_a_strict_policy(
    api: httpx.AsyncClient,
) -> None:
    root = await api.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = await api.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = csp_of(page)
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'" and policy["img-src"] == "'self' blob: data:"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in page.text and "https://" not in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    for url in [u for u in links_of(page.text) if not u.startswith(("#", "/docs", "data:"))]:
        asset = await api.get(f"/ui/{url}")
        assert asset.status_code == 200, url
        assert csp_of(asset)["default-src"] == "'self'"
    for script in SCRIPTS:
        served = await api.get(f"/ui/{script.name}")
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize(
    "path", ["/ui/nothing.js", "/ui/..%2Fvendor.py", "/ui/%2e%2e/app.py", "/ui/sub/app.js", "/ui/.hidden.js"]
)
async def test_nothing_else_is_served(api: httpx.AsyncClient, path: str) -> None:
    assert (await api.get(path)).status_code == 404


async def test_the_page_needs_no_key_but_the_api_does(
    settings: Settings, fake_server: fakeredis.FakeServer
) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("a-key")})
    async with running(create_app(keyed, redis_factory=fake_factory(fake_server))) as client:
        assert (await client.get("/ui/")).status_code == 200
        assert (await client.get("/ui/app.js")).status_code == 200
        assert (await client.get("/v1/pipelines")).status_code == 401


def test_the_scripts_never_parse_data_as_html() -> None:
    """No innerHTML/outerHTML/insertAdjacentHTML/document.write/eval anywhere; modules only."""
    assert {p.name for p in SCRIPTS} >= {"app.js", "api.js", "dom.js", "submit.js", "job.js", "jobs.js"}
    banned = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\('style'"
    )
    for script in SCRIPTS:
        text = script.read_text()
        assert not banned.search(text), script.name
        assert not re.search(r"(from|import|fetch\(|EventSource\()\s*['\"`]https?:", text), script.name
        assert re.findall(r"^import .* from '(.*)';$", text, re.M) == [
            m for m in re.findall(r"^import .* from '(.*)';$", text, re.M) if m.startswith("./")
        ], script.name
        assert len(text.splitlines()) < 300, f"{script.name}: split it"


def test_the_console_ships_in_the_wheel() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in ui.FOLDER.iterdir():
        relative = path.relative_to(REPO / "services").as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for glob in package_data["services"]), relative
