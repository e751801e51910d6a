"""A bare HTTP/1.1 pass-through proxy: the floor for a Python gateway in bench_gateway.

Why: bench_gateway reports what tether adds to a completion's latency. Some
of that is paid by any gateway written in Python on this machine (one more
hop, one more process sharing the CPU, an event loop that serves every
request in turn); the rest is tether's own work. This proxy does nothing but
the hop: it reads a request's head and body, writes the same bytes to the
upstream over a pooled keep-alive connection, and writes the response's bytes
back unchanged (llhttp, through ``httptools``, only finds where the response
ends). No JSON is parsed, nothing is logged or stored, no key is checked. What
it adds is what a Python gateway cannot avoid; tether minus it is the cost of
tether's durability and protocol work.

    python benchmarks/passthrough.py --port 8101 --upstream http://127.0.0.1:8100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from urllib.parse import urlsplit

import httptools

_HEAD_END = b"\r\n\r\n"
_HEALTH = b"GET /health "
_HEALTH_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream; relays a response to ``client``."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client.transport.write(data)
        self.parser.feed_data(data)
        if self.done:
            self.done = False
            self.client = None
            if client is not None:
                client.answered()
            self.pool.release(self)

    def on_message_complete(self) -> None:
        self.done = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        if self.client is not None:
            self.client.transport.close()


class Pool:
    """Idle upstream connections, last in first out."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[Upstream] = []

    async def take(self) -> Upstream:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        return conn

    def release(self, conn: Upstream) -> None:
        self.idle.append(conn)

    def forget(self, conn: Upstream) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)


class Client(asyncio.Protocol):
    """One client connection: requests are relayed one at a time, as HTTP/1.1 has them."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = b""
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def answered(self) -> None:
        self.busy = False
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        end = self.buf.find(_HEAD_END)
        if end < 0:
            return
        head_len = end + len(_HEAD_END)
        if self.buf.startswith(_HEALTH):
            self.buf = self.buf[head_len:]
            self.transport.write(_HEALTH_OK)
            return
        size = 0
        for line in self.buf[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                size = int(value)
        if len(self.buf) < head_len + size:
            return
        request, self.buf = self.buf[: head_len + size], self.buf[head_len + size :]
        self.busy = True
        asyncio.get_running_loop().create_task(self._relay(request))

    async def _relay(self, request: bytes) -> None:
        try:
            conn = await self.pool.take()
        except OSError:
            self.transport.write(_BAD_GATEWAY)
            self.transport.close()
            return
        conn.client = self
        assert conn.transport is not None
        conn.transport.write(request)


async def serve(port: int, upstream: str) -> None:
    url = urlsplit(upstream)
    if url.scheme != "http" or url.hostname is None:
        raise SystemExit(f"--upstream: an http:// URL, not {upstream!r}")
    pool = Pool(url.hostname, url.port or 80)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool), "127.0.0.1", port, backlog=1024)
    stdin_closed = loop.create_future()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096) and not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    async with server:
        await stdin_closed  # bench_gateway closes our stdin to stop us


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="the upstream's http:// base URL")
    ns = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(ns.port, ns.upstream))
    else:
        uvloop.run(serve(ns.port, ns.upstream))


if __name__ == "__main__":
    main()
