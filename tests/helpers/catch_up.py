"""A JSON stream read from an offset to its tail with catch-up GETs, as a resuming client does."""

from __future__ import annotations

from typing import Any

import httpx


def read_to_tail(url: str, offset: str, client: httpx.Client | None = None) -> list[Any]:
    """The messages of the JSON stream at ``url`` after ``offset``, up to its tail."""
    get = client.get if client is not None else httpx.get
    messages: list[Any] = []
    while True:
        r = get(url, params={"offset": offset})
        assert r.status_code == 200, r.text
        messages += r.json()
        offset = r.headers["stream-next-offset"]
        if r.headers.get("stream-up-to-date") == "true":
            return messages
