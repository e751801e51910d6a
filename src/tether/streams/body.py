"""A request's body, read whole up to a limit: the one reader of the raw ASGI routes.

The streams routes and the subscriptions' control routes take their requests
straight from ASGI, with no framework below them, so both read bodies here. The
declared Content-Length is checked before anything is read and the running total
while reading, so a body past the limit costs at most one chunk beyond it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tether.streams.http_errors import HTTPError

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientGone(Exception):
    """The client went away before its body was read whole: there is no one to answer."""


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole body; HTTPError 413 past ``limit`` bytes, ClientGone on a disconnect."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "too_large", f"request body is larger than {limit} bytes")
    parts: list[bytes] = []
    total = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk = msg.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise HTTPError(413, "too_large", f"request body is larger than {limit} bytes")
            parts.append(chunk)
        if not msg.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)
