"""The browser console (`/ui/`, `/` leads there): a static page of plain ES modules and CSS in
services/api/static/ui/, no build step, nothing from elsewhere.

The page talks to the /v1 routes like any client (with the API key the user gives it, kept in
the tab's sessionStorage), so it needs no key to be served. Every answer here carries a strict
Content-Security-Policy: scripts, styles, connections only from this origin (no inline script
or style, no eval), images also from blob:/data: (previews of the user's own files), no
frames, no plugins, no form posts elsewhere. Only the files in that folder are served, by name.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from shared.errors import NotFound

FOLDER = Path(__file__).resolve().parents[1] / "static" / "ui"
PREFIX = "/ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # small files; a new release shows at the next load
}


def served_files() -> dict[str, str]:
    """The page's files by name (one folder, no subfolders) and their media types."""
    return {
        path.name: MEDIA_TYPES[path.suffix]
        for path in FOLDER.iterdir()
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


SERVED = served_files()

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=307, headers=HEADERS)


@router.get(PREFIX)
async def ui_bare() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=307, headers=HEADERS)


@router.get(PREFIX + "/")
async def ui_page() -> FileResponse:
    return FileResponse(FOLDER / "index.html", media_type=SERVED["index.html"], headers=HEADERS)


@router.get(PREFIX + "/{name}")
async def ui_file(name: str) -> FileResponse:
    """One of the page's files, by its exact name."""
    if name not in SERVED:
        raise NotFound(f"no console file {name!r}")
    return FileResponse(FOLDER / name, media_type=SERVED[name], headers=HEADERS)
