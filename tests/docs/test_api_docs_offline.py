"""``/docs`` renders every operation with the network closed, the raw streams and the
WebSocket included.

On main the OpenAPI document (and so /docs) left out ``/v1/stream/{path}`` and
``/v1/sessions/{session_id}/ws``: FastAPI never sees the first and skips the second.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from helpers.server import TetherServer

STREAM = "/v1/stream/{path}"
SOCKET = "/v1/sessions/{session_id}/ws"


def _operations(page: Any) -> set[tuple[str, str]]:
    page.wait_for_selector(".opblock-summary-path")
    blocks = page.locator(".opblock-summary").all()
    return {
        (
            b.locator(".opblock-summary-method").inner_text().strip(),
            b.locator(".opblock-summary-path").inner_text().strip().replace("\u200b", ""),
        )
        for b in blocks
    }


def test_docs_render_streams_and_websocket_with_the_network_closed(
    chromium: Any, server: TetherServer
) -> None:
    own = urlsplit(server.base_url).netloc
    refused: list[str] = []

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    chromium.route("**/*", only_this_server)
    page = chromium.new_page()
    page.goto(server.base_url + "/docs")
    ops = _operations(page)
    for method in ("PUT", "POST", "GET", "HEAD", "DELETE"):
        assert (method, STREAM) in ops, sorted(ops)
    assert ("GET", SOCKET) in ops
    patch = ("PATCH", "/v1/sessions/{session_id}")
    assert {("GET", "/healthz"), ("GET", "/v1/models"), patch} <= ops
    assert refused == []
