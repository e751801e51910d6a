"""The floor of any Python HTTP layer here: httptools on uvloop, and no ASGI.

bench_streams.py's target ``floor-httptools`` runs this server: every request is
parsed by httptools and answered from a constant (a create 201, an append 204
with a next offset, anything else 200), in the parser's callback, with nothing
stored and no task, scope or ASGI message made. Against ``floor-uvicorn`` (the
same loop and parser behind uvicorn's ASGI protocol) it shows what the ASGI
layer costs per request; against ``tether``, what is left for tether's own work.

Usage: python floor_httptools.py --host 127.0.0.1 --port 8787
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop

_CREATED = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"
_APPENDED = (
    b"HTTP/1.1 204 No Content\r\nstream-next-offset: 0000000000000001_0000000000000001\r\n\r\n"
)
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_ANSWERS = {b"PUT": _CREATED, b"POST": _APPENDED}


class Floor(asyncio.Protocol):
    """One keep-alive connection; the body is read whole (it is part of the request)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's: not a subclass)
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(_ANSWERS.get(self.parser.get_method(), _OK))


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Floor, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    ns = p.parse_args()
    uvloop.run(serve(ns.host, ns.port))


if __name__ == "__main__":
    main()
