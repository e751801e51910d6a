"""A request the front door lets through costs no coroutine of the front door's own.

Every append passes the guard, and every coroutine in a request's chain is resumed at
each await below it (the body's arrival, the group commit): so the guard judges a
request at once and hands back the app's own awaitable, not one that wraps it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tether.api.auth import Auth
from tether.api.guard import Guard, GuardConfig

Message = dict[str, Any]


def _scope(host: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/stream/x",
        "query_string": b"",
        "headers": [(b"host", host), (b"content-type", b"text/plain"), (b"content-length", b"1")],
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"x", "more_body": False}


def test_a_request_let_through_is_the_apps_own_awaitable() -> None:
    """The guard returns the app's coroutine itself; a refused request never reaches the app."""
    reached: list[str] = []
    sent: list[Message] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def send(message: Message) -> None:
        sent.append(message)

    guard = Guard(app, Auth(), GuardConfig(), "/v1/stream/")
    passed = guard(_scope(b"127.0.0.1:8000"), _receive, send)
    assert getattr(passed, "cr_code", None) is app.__code__
    asyncio.run(passed)  # type: ignore[arg-type]
    assert reached == ["/v1/stream/x"]

    asyncio.run(guard(_scope(b"attacker.example:8000"), _receive, send))  # type: ignore[arg-type]
    assert reached == ["/v1/stream/x"]
    assert sent[0]["status"] == 400
