"""LeanTransport over real loopback sockets: pooling, requests sent at once, stale connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Self

import httpx
import pytest

from tether.providers._transport import LeanTransport, Sent


class LoopbackServer:
    """A raw asyncio server on 127.0.0.1 for the life of an ``async with``; ``url`` is its."""

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Origin(LoopbackServer):
    """A keep-alive HTTP/1.1 server that answers each POST with its body, reversed.

    With ``drop_second``, each connection's second request is read and the
    connection closed without an answer (as a server that timed it out does).
    """

    def __init__(self, drop_second: bool = False) -> None:
        self.drop_second = drop_second
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []
        self.connections = 0
        self.received = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.heads.append(head)
                self.bodies.append(body)
                self.received.set()
                if answered == 1 and self.drop_second:
                    writer.close()
                    return
                answer = body[::-1]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer))
                writer.write(answer)
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Request:
    return httpx.Request(
        "POST", url, headers=headers, content=body, extensions={"timeout": {"read": 5.0}}
    )


def send_now(
    transport: LeanTransport, url: str, body: bytes, headers: dict[str, str] | None = None
) -> Sent | None:
    """``transport.send_now`` as the providers call it: the parts, and how to build the request."""
    return transport.send_now(httpx.URL(url), headers or {}, body, lambda: post(url, body, headers))


@pytest.fixture
async def transport() -> AsyncIterator[LeanTransport]:
    t = LeanTransport()
    yield t
    await t.aclose()


async def answer(transport: LeanTransport, request: httpx.Request) -> bytes:
    resp = await transport.handle_async_request(request)
    try:
        return b"".join([part async for part in resp.stream])  # type: ignore[union-attr]
    finally:
        await resp.aclose()


async def test_connections_are_reused_once_a_response_is_read(transport: LeanTransport) -> None:
    async with Origin() as origin:
        assert await answer(transport, post(origin.url, b"abc")) == b"cba"
        assert await answer(transport, post(origin.url, b"xyz")) == b"zyx"
    assert origin.connections == 1


async def test_send_now_needs_an_idle_connection(transport: LeanTransport) -> None:
    async with Origin() as origin:
        assert send_now(transport, origin.url, b"first") is None  # nothing pooled yet
        await answer(transport, post(origin.url, b"warm"))
        sent = send_now(transport, origin.url, b"now")
        assert sent is not None
        # Written without awaiting anything: the origin has it as soon as it reads.
        origin.received.clear()
        await asyncio.wait_for(origin.received.wait(), 2)
        assert origin.bodies[-1] == b"now"
        assert not sent.answered.done()  # its status is known once the head is read
        resp = await transport.response_to(sent)
        assert sent.answered.result() == 200
        assert b"".join([p async for p in resp.stream]) == b"won"  # type: ignore[union-attr]
        await resp.aclose()
    assert origin.connections == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer k", "content-type": "application/json", "x-extra": "1"},
        {"Host": "upstream.example", "accept": "text/event-stream"},
        {"content-length": "4"},
    ],
)
async def test_a_request_sent_now_is_byte_for_byte_what_httpx_would_send(
    transport: LeanTransport, headers: dict[str, str]
) -> None:
    async with Origin() as origin:
        url = origin.url + "v1/chat/completions?x=1"
        await answer(transport, post(url, b"body", headers))
        sent = send_now(transport, url, b"body", headers)
        assert sent is not None
        resp = await transport.response_to(sent)
        await resp.aread()
        await resp.aclose()
        assert origin.heads[1] == origin.heads[0]
        assert origin.bodies == [b"body", b"body"]
        # The httpx request, built once it is needed, is the same request.
        assert sent.request.url == httpx.URL(url)
        assert sent.request.content == b"body"


async def test_a_request_sent_on_a_stale_connection_goes_again_on_a_new_one(
    transport: LeanTransport,
) -> None:
    async with Origin(drop_second=True) as origin:
        await answer(transport, post(origin.url, b"one"))
        sent = send_now(transport, origin.url, b"two")
        assert sent is not None
        resp = await transport.response_to(sent)
        assert sent.answered.result() == 200  # the answer to the request sent again
        assert b"".join([p async for p in resp.stream]) == b"owt"  # type: ignore[union-attr]
        await resp.aclose()
    assert origin.bodies == [b"one", b"two", b"two"]
    assert origin.connections == 2


async def test_an_aborted_send_closes_its_connection(transport: LeanTransport) -> None:
    async with Origin() as origin:
        await answer(transport, post(origin.url, b"warm"))
        sent = send_now(transport, origin.url, b"unwanted")
        assert sent is not None
        sent.abort()
        assert sent.answered.result() == 0  # no answer will be read
        with pytest.raises(httpx.ReadError):
            await transport.response_to(sent)
        # The next request cannot get the aborted connection back from the pool.
        assert await answer(transport, post(origin.url, b"next")) == b"txen"
    assert origin.connections == 2


class Trickle(LoopbackServer):
    """Answers any request with a chunked body: ``first`` at once, then ``rest`` when told."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self.go_on = asyncio.Event()

    async def __aexit__(self, *exc: object) -> None:
        self.go_on.set()  # (a handler still waiting would keep the server from closing)
        await super().__aexit__(*exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%b\r\n" % (len(self.first), self.first))
        await self.go_on.wait()
        writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(self.rest), self.rest))
        await writer.drain()
        writer.close()


async def first_read(
    transport: LeanTransport, origin: Trickle
) -> tuple[httpx.Response, AsyncIterator[bytes]]:
    """GET from ``origin`` with a 0.1 s read timeout: the response and the rest of its body."""
    request = httpx.Request("GET", origin.url, extensions={"timeout": {"read": 0.1}})
    resp = await transport.handle_async_request(request)
    parts = aiter(resp.stream)  # type: ignore[arg-type]
    assert await anext(parts) == origin.first
    return resp, parts


async def test_a_server_silent_for_the_read_timeout_fails_the_read(
    transport: LeanTransport,
) -> None:
    async with Trickle(b"first", b"never sent") as origin:
        resp, parts = await first_read(transport, origin)
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await anext(parts)
        assert 0.09 <= asyncio.get_running_loop().time() - started < 1.0
        await resp.aclose()


async def test_a_reader_slower_than_the_read_timeout_is_not_timed_out(
    transport: LeanTransport,
) -> None:
    """The timeout bounds the wait for the server, not the time between two reads."""
    async with Trickle(b"first", b"second") as origin:
        resp, parts = await first_read(transport, origin)
        origin.go_on.set()
        # The rest arrives, and the body's timer fires, while nobody reads.
        await asyncio.sleep(0.3)
        assert [p async for p in parts] == [b"second"]
        await resp.aclose()


async def test_a_connection_the_server_does_not_accept_times_out(
    transport: LeanTransport,
) -> None:
    # A listener with a full backlog: the kernel drops further SYNs unanswered.
    with socket.socket() as listener, socket.socket() as first:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        first.connect(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        request = httpx.Request("GET", url, extensions={"timeout": {"connect": 0.2}})
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ConnectTimeout):
            await transport.handle_async_request(request)
        assert 0.19 <= asyncio.get_running_loop().time() - started < 1.0
