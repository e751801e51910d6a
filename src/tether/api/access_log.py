"""``--access-log``: one line per request, written when its response is done.

A line holds the method, the path (the query string is left out: read
tokens travel in ``?token=``), the status, the duration and the caller's key
identity (``key_…``, never the key; ``-`` without one). It wraps the whole
app, so refused requests (401, 429, 413) have their line too. A WebSocket
is logged as ``WS`` with 101 once accepted, when it closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from tether.api.auth import Auth, Unauthorized
from tether.observability.logs import fields
from tether.streams.app import Message, Receive, Scope, Send

log = logging.getLogger("tether.access")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessLog:
    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0  # no response: the client left, or the app failed

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "websocket.accept":
                status = 101
            elif message["type"] == "websocket.close" and not status:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._write(scope, status, time.perf_counter() - began)

    def _write(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        path = repr(scope["path"])[1:-1]  # control characters escaped: one request, one line
        key = self._identity(scope) or "-"
        ms = round(seconds * 1000, 3)
        log.info(
            "%s %s %d %.1f ms %s", method, path, status, ms, key,
            extra=fields(method=method, path=path, status=status, duration_ms=ms, key=key),
        )  # fmt: skip

    def _identity(self, scope: Scope) -> str | None:
        """The key identity the request came with (a read token's owner), if valid."""
        if not self.auth.enabled:
            return None
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        token = None
        query = scope.get("query_string", b"")
        if authorization is None and b"token=" in query:
            token = parse_qs(query.decode("latin-1")).get("token", [None])[0]
        try:
            return self.auth.caller(authorization, token).owner
        except Unauthorized:
            return None
