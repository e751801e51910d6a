"""The web UI's routes, without a browser: the page, its assets, and nothing else."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tether.api.app import TetherApp
from tether.api.auth import Auth
from tether.api.webui import WEB_DIR
from tether.store.memory import MemoryStore


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = TetherApp(MemoryStore(), auth=Auth(["a-key"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def test_the_page_is_served_at_the_root_without_a_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.mjs">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("app.mjs", "text/javascript"),
        ("fold.mjs", "text/javascript"),
        ("docs.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_assets_are_served_with_their_types(
    client: httpx.AsyncClient, name: str, media: str
) -> None:
    r = await client.get(f"/ui/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert r.headers["cache-control"] == "no-cache"
    assert r.content == (WEB_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/ui/nope.js", "/ui/nope.mjs", "/ui/..%2Fwebui.py", "/ui/.hidden", "/ui/", "/ui/webui.py"],
)
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


async def test_the_page_is_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)


async def test_every_module_the_page_imports_is_served_as_javascript(
    client: httpx.AsyncClient,
) -> None:
    """The page is ES modules importing each other by plain name, with no build step."""
    wanted = {"app.mjs"}
    served: set[str] = set()
    while wanted - served:
        name = (wanted - served).pop()
        r = await client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith("text/javascript"), name
        served.add(name)
        wanted |= set(re.findall(r'^import (?:.* from )?"\./([\w-]+\.mjs)";$', r.text, re.M))
    assert served == {p.name for p in WEB_DIR.glob("*.mjs")}
