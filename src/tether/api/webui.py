"""The web UI: a few static files served at ``/`` and ``/ui/...``, no build step.

The page is plain HTML, CSS and JavaScript shipped inside the package
(``tether/api/web/``); its script is native ES modules (``*.mjs``, one idea
each, loaded by ``<script type="module">``), which the browser fetches from
this same folder and Node can import as they are (the fold's golden test).
It talks to the session API like any other client: the snapshot first, then
the live events from the snapshot's offset.
The routes need no key; the page asks for one when the API answers 401.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).with_name("web")

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: The page loads only its own files and talks only to its own origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

HEADERS = {
    # Revalidate every time (ETag / Last-Modified make that cheap), so an
    # upgraded tether never runs an old module against a new API.
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def _asset(name: str) -> FileResponse:
    path = WEB_DIR / name
    media = MEDIA_TYPES.get(path.suffix)
    # Only plain file names from the web folder: no subfolders, no dotfiles.
    if media is None or "/" in name or name.startswith(".") or not path.is_file():
        raise HTTPException(404, f"no such file: {name}")
    headers = dict(HEADERS)
    if path.suffix == ".html":
        headers["content-security-policy"] = CSP
    return FileResponse(path, media_type=media, headers=headers)


def _swagger_asset(name: str) -> FileResponse:
    """Swagger UI's own script and style, from the package that ships them (no CDN)."""
    path = Path(str(resources.files("fastapi_swagger") / "resources" / name))
    media = MEDIA_TYPES[path.suffix]
    return FileResponse(path, media_type=media, headers=HEADERS)


def build_web_router() -> APIRouter:
    """``GET /`` (the page), ``GET /ui/{name}`` (its modules and styles) and ``GET /docs``.

    The API docs are Swagger UI served from this server's own files, under the
    web UI's policy: no script from anywhere else runs in the origin where the
    web UI keeps its key.
    """
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        return _asset("index.html")

    @router.get("/ui/{name}")
    async def asset(name: str) -> FileResponse:
        return _asset(name)

    @router.get("/docs")
    async def docs() -> FileResponse:
        return _asset("docs.html")

    @router.get("/docs/swagger-ui-bundle.js")
    async def swagger_script() -> FileResponse:
        return _swagger_asset("swagger-ui-bundle.js")

    @router.get("/docs/swagger-ui.css")
    async def swagger_style() -> FileResponse:
        return _swagger_asset("swagger-ui.css")

    return router
