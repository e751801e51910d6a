"""The API docs at /docs render from this server's own files, under the web UI's policy.

On main /docs loaded an unpinned script from a CDN into the origin where the
web UI keeps its key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from helpers.server import TetherServer
from tether.api.webui import CSP


def test_the_docs_page_carries_the_ui_policy(server: TetherServer) -> None:
    r = httpx.get(server.base_url + "/docs")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP
    assert "cdn" not in r.text.lower() and "https://" not in r.text


def test_the_docs_render_every_route_from_local_files_only(page: Any, server: TetherServer) -> None:
    origins: set[str] = set()
    violations: list[str] = []
    page.on("request", lambda req: origins.add(urlsplit(req.url).netloc))
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(server.base_url + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/sessions" in p for p in paths)
    assert any("/v1/read-tokens" in p for p in paths)
    assert origins == {urlsplit(server.base_url).netloc}
    assert violations == []
