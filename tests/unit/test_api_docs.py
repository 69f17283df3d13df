"""/docs works offline: the page loads only the vendored Swagger UI from the API itself, the files
are the ones on record (services/api/vendor.py), and they ship with the package and the image."""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from pathlib import Path

import fakeredis
import httpx
import pytest
from pydantic import SecretStr

from services.api import vendor
from services.api.app import create_app
from shared.settings import Settings
from tests.support.api import fake_factory, running
from tests.support.links import links_of

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def test_the_vendored_files_are_the_ones_on_record() -> None:
    record = vendor.swagger_ui()
    assert record.package == "swagger-ui-dist" and record.version.count(".") == 2
    assert record.tarball.endswith(f"/swagger-ui-dist-{record.version}.tgz")
    assert record.integrity.startswith("sha512-") and len(record.integrity) == len("sha512-") + 88
    on_disk = {p.name for p in vendor.FOLDER.iterdir()}
    assert on_disk == set(record.files) | {vendor.RECORD}, "only the recorded files, and all of them"
    assert set(vendor.KEPT) - vendor.OPTIONAL <= set(record.files)
    for name, sha256 in record.files.items():
        assert vendor.sha256_of(vendor.FOLDER / name) == sha256, name
    assert not any(name.endswith(".map") for name in record.files)


async def test_the_docs_page_loads_every_asset_from_the_api(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    urls = links_of(page.text)
    version = vendor.swagger_ui().version
    assert all(url.startswith(f"/docs/swagger-ui/{version}/") for url in urls), urls
    assert "url: '/openapi.json'" in page.text and "'/docs/oauth2-redirect'" in page.text
    fetched = set()
    for url in urls:
        name = url.rsplit("/", 1)[1]
        asset = await api.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(CONTENT_TYPES[Path(name).suffix]), url
        assert hashlib.sha256(asset.content).hexdigest() == vendor.swagger_ui().files[name]
        assert "immutable" in asset.headers["cache-control"]
        fetched.add(name)
    assert fetched == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}
    assert (await api.get("/docs/oauth2-redirect")).status_code == 200
    assert (await api.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/redoc",  # off: it would load ReDoc from a CDN
        "/docs/swagger-ui/1.0.0/swagger-ui-bundle.js",  # not the vendored version
        "/docs/swagger-ui/{version}/vendor.json",  # in the folder, not a page asset
        "/docs/swagger-ui/{version}/LICENSE",
        "/docs/swagger-ui/{version}/..%2F..%2Fvendor.py",
        "/docs/swagger-ui/{version}/swagger-ui-bundle.js.map",
    ],
)
async def test_nothing_else_is_served(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path.format(version=vendor.swagger_ui().version))
    assert response.status_code == 404, response.text


async def test_the_docs_need_no_api_key(settings: Settings, fake_server: fakeredis.FakeServer) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("a-key")})
    async with running(create_app(keyed, redis_factory=fake_factory(fake_server))) as client:
        assert (await client.get("/v1/pipelines")).status_code == 401
        page = await client.get("/docs")
        assert page.status_code == 200
        for url in links_of(page.text) + ["/docs/oauth2-redirect", "/openapi.json"]:
            assert (await client.get(url)).status_code == 200, url


def test_the_vendored_files_ship_in_the_wheel_and_the_api_image() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    base = REPO / "services"
    for path in vendor.FOLDER.iterdir():
        relative = path.relative_to(base).as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for glob in package_data["services"]), relative
    dockerfile = (REPO / "Dockerfile.api").read_text()
    assert "COPY services/ services/" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile  # a wheel (not -e): package-data
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    ignored = [glob for glob in ignored if glob and not glob.startswith("#")]
    for path in vendor.FOLDER.iterdir():
        parts = path.relative_to(REPO).parts
        for n in range(1, len(parts) + 1):
            prefix = "/".join(parts[:n])
            assert not any(fnmatch.fnmatch(prefix, glob) for glob in ignored), f"{prefix} is not in the image"
