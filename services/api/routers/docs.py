"""The interactive docs (`/docs`, Swagger UI) served whole by the API, so they work offline.

FastAPI's own `/docs` sends the browser to a CDN for an unpinned `swagger-ui-dist@5` (no
integrity check): a blank page on a host with no way out, and code from elsewhere on the
page. Here the page loads the vendored, pinned copy (services/api/vendor.py) from this API,
under a path that names the version (`/docs/swagger-ui/<version>/...`), so a browser may keep
those files for good and a bump is fetched afresh. No API key is asked, as for /openapi.json.
ReDoc (`/redoc`) is off: it would need a vendored copy of its own.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from services.api import vendor
from shared.errors import NotFound

DOCS = "/docs"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"  # where FastAPI's default docs had it
ASSETS = "/docs/swagger-ui"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
SERVED = {name: kind for name in vendor.KEPT for suffix, kind in MEDIA_TYPES.items() if name.endswith(suffix)}
# The URL names the version: its bytes never change.
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


def asset_url(root_path: str, name: str) -> str:
    return f"{root_path}{ASSETS}/{vendor.swagger_ui().version}/{name}"


@router.get(DOCS)
async def swagger_ui_page(request: Request) -> HTMLResponse:
    app = request.app
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=root + (app.openapi_url or "/openapi.json"),
        title=f"{app.title} - Swagger UI",
        swagger_js_url=asset_url(root, "swagger-ui-bundle.js"),
        swagger_css_url=asset_url(root, "swagger-ui.css"),
        swagger_favicon_url=asset_url(root, "favicon-32x32.png"),
        oauth2_redirect_url=root + OAUTH2_REDIRECT,
        init_oauth=app.swagger_ui_init_oauth,
        # validatorUrl: Swagger UI would ask validator.swagger.io about the schema otherwise
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(ASSETS + "/{version}/{name}")
async def swagger_ui_asset(version: str, name: str) -> FileResponse:
    """One of the page's vendored files, only those, of the vendored version only."""
    if version != vendor.swagger_ui().version or name not in SERVED:
        raise NotFound(f"no docs asset {version}/{name}")
    return FileResponse(vendor.FOLDER / name, media_type=SERVED[name], headers=IMMUTABLE)
