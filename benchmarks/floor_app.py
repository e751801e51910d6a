"""The floor of tether's HTTP stack: uvicorn as tether runs it, with no tether behind it.

bench_streams.py's target ``floor-uvicorn`` serves this ASGI app on uvicorn with
uvloop and httptools (tether's loop and parser), so the append scenarios measure
what the HTTP layer alone costs on this machine: a create answers 201, an append
reads its body and answers 204 with a next offset, as tether's do, and nothing is
stored. No tether build can append faster than this over the same stack.
"""

from __future__ import annotations

from typing import Any

_OFFSET_HEADER = b"stream-next-offset"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # the body is read whole, as an append's is
        more = (await receive()).get("more_body", False)
    method = scope["method"]
    status = 201 if method == "PUT" else 204 if method == "POST" else 200
    headers = [(b"content-type", b"application/json")] if status == 201 else []
    if method == "POST":
        headers.append((_OFFSET_HEADER, b"0000000000000001_0000000000000001"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
