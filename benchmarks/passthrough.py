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

``--front asgi`` puts the same relay behind uvicorn (httptools, uvloop), the
HTTP server tether runs on: uvicorn parses each request into an ASGI scope,
and the response goes back as ASGI messages, one per upstream chunk, re-chunked
by uvicorn. What that adds over the raw front is the price of the HTTP server
itself, before any gateway's own work.

    python benchmarks/passthrough.py --port 8101 --upstream http://127.0.0.1:8100
    python benchmarks/passthrough.py --port 8102 --upstream http://127.0.0.1:8100 --front asgi
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any
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
            self._answered()

    def _answered(self) -> None:
        """The response has ended: tell its client, and pool the connection again."""
        self.done = False
        client, self.client = self.client, None
        if client is not None:
            client.answered()
        self.pool.release(self)

    def on_message_complete(self) -> None:
        self.done = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        if self.client is not None:
            self.client.lost()


class ParsedUpstream(Upstream):
    """An upstream connection that hands an :class:`Exchange` the parsed response."""

    client: Exchange | None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.done:
            self._answered()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.client is not None:
            self.client.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.client is not None:
            self.client.put(("start", self.parser.get_status_code()))

    def on_body(self, body: bytes) -> None:
        if self.client is not None:
            self.client.put(("body", body))


class Pool:
    """Idle upstream connections, last in first out."""

    def __init__(self, host: str, port: int, protocol: type[Upstream] = Upstream) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol
        self.idle: list[Upstream] = []

    async def take(self) -> Upstream:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: self.protocol(self), self.host, self.port)
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

    def lost(self) -> None:
        self.transport.close()

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


class Exchange:
    """One request relayed for the ASGI front: the upstream's response, as it comes."""

    _ANSWERED = ("end", 0)
    _LOST = ("lost", 0)

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.put = self.queue.put_nowait

    def answered(self) -> None:
        self.put(self._ANSWERED)

    def lost(self) -> None:
        self.put(self._LOST)


#: Hop-by-hop headers: uvicorn frames the messages itself on each side.
_HOP = frozenset({b"connection", b"content-length", b"keep-alive", b"transfer-encoding"})


class AsgiRelay:
    """The relay as an ASGI app: the request's bytes rebuilt from its scope, sent upstream."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        head = [b"%s %s HTTP/1.1\r\n" % (scope["method"].encode(), target)]
        for name, value in scope["headers"]:
            if name not in _HOP:
                head += (name, b": ", value, b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        try:
            conn = await self.pool.take()
        except OSError:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        exchange = Exchange()
        conn.client = exchange  # type: ignore[assignment]
        assert conn.transport is not None
        conn.transport.write(b"".join(head) + body)
        get = exchange.queue.get
        while True:
            kind, value = await get()
            if kind == "body":
                await send({"type": "http.response.body", "body": value, "more_body": True})
            elif kind == "start":
                headers = [(n, v) for n, v in exchange.headers if n not in _HOP]
                await send({"type": "http.response.start", "status": value, "headers": headers})
            elif kind == "end":
                await send({"type": "http.response.body", "body": b""})
                return
            else:
                raise ConnectionError("the upstream closed the connection mid-response")


def _on_stdin_close(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """Resolves when our standard input closes (bench_gateway closes it to stop us)."""
    closed: asyncio.Future[None] = loop.create_future()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096) and not closed.done():
            closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    return closed


async def serve(port: int, upstream: str, front: str = "raw") -> None:
    url = urlsplit(upstream)
    if url.scheme != "http" or url.hostname is None:
        raise SystemExit(f"--upstream: an http:// URL, not {upstream!r}")
    loop = asyncio.get_running_loop()
    if front == "asgi":
        import uvicorn

        pool = Pool(url.hostname, url.port or 80, ParsedUpstream)
        config = uvicorn.Config(
            AsgiRelay(pool), host="127.0.0.1", port=port, loop="none", http="httptools",
            lifespan="off", log_level="warning", access_log=False, backlog=1024,
        )  # fmt: skip
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        await asyncio.wait((serving, _on_stdin_close(loop)), return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        return
    pool = Pool(url.hostname, url.port or 80)
    raw = await loop.create_server(lambda: Client(pool), "127.0.0.1", port, backlog=1024)
    async with raw:
        await _on_stdin_close(loop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="the upstream's http:// base URL")
    p.add_argument(
        "--front",
        choices=("raw", "asgi"),
        default="raw",
        help="raw: the client side on asyncio.Protocol; asgi: behind uvicorn (default: raw)",
    )
    ns = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(ns.port, ns.upstream, ns.front))
    else:
        uvloop.run(serve(ns.port, ns.upstream, ns.front))


if __name__ == "__main__":
    main()
