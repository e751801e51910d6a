"""A real tether server over loopback for the client tests, and agents that misbehave on cue.

The server is ``TetherApp`` under uvicorn in a background thread (real HTTP on
a real socket, started once per test session for speed), with API keys on and
small protocol limits (catch-up reads of ~1 KiB, SSE responses that end every
second, quick heartbeats and long-polls), so that the clients' paging,
reconnection and heartbeat handling run in every test rather than after
minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from client.proxy import TcpProxy
from tether.agents.app import App
from tether.api.auth import Auth
from tether.runtime.context import RunContext
from tether.store.memory import MemoryStore
from tether.streams.app import Receive, Scope, Send, StreamsApp, StreamsConfig

KEY = "tk-test-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"

agents = App()


@agents.agent("count")
async def count(ctx: RunContext) -> None:
    """``/count N MS``: "1 2 ... N", one number per delta, MS ms apart (like the demo model)."""
    m = re.match(r"/count (\d+)(?: (\d+))?", ctx.history[-1].text)
    n, ms = (int(m.group(1)), int(m.group(2) or 0)) if m else (3, 0)
    for i in range(1, n + 1):
        await ctx.text(str(i) if i == 1 else f" {i}")
        if ms:
            await asyncio.sleep(ms / 1000)


@agents.agent("silent")
async def silent(ctx: RunContext) -> None:
    await asyncio.sleep(60)


@agents.agent("stall")
async def stall(ctx: RunContext) -> None:
    await ctx.text("hello")
    await asyncio.sleep(60)


@agents.agent("tools")
async def tools(ctx: RunContext) -> None:
    out = await ctx.tool_call("add", {"a": 2, "b": 3})
    await ctx.text(f"sum={out.output}" if out.ok else f"error={out.error}")


@agents.agent("approval")
async def approval(ctx: RunContext) -> None:
    out = await ctx.tool_call("remove", {"path": "/tmp/x"}, approval=True)
    await ctx.text(f"removed={out.output}" if out.ok else f"refused={out.error}")


@agents.agent("broken")
async def broken(ctx: RunContext) -> None:
    await ctx.text("about to fail")
    raise RuntimeError("the agent fell over")


@dataclass
class Server:
    host: str
    port: int
    app: object

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class _Uvicorn(uvicorn.Server):
    loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


def registry_available() -> bool:
    try:
        import tether.providers.registry  # noqa: F401
    except ImportError:
        return False
    return True


class StreamsOnly:
    """The Durable Streams endpoints alone, for when the full app cannot be built."""

    def __init__(self, config: StreamsConfig) -> None:
        self.store = MemoryStore()
        self.streams = StreamsApp(self.store, config)

    def shutdown(self) -> None:
        self.streams.shutdown()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.streams(scope, receive, send)
            return
        if scope["type"] != "lifespan":
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.store.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await self.store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _config(**overrides: float) -> StreamsConfig:
    config = StreamsConfig(
        read_chunk=1024, long_poll_timeout=0.5, sse_max_seconds=1.0, sse_heartbeat=0.2
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def full_app(config: StreamsConfig) -> Any:
    from tether.api.app import TetherApp

    return TetherApp(MemoryStore(), config, agents=agents, auth=Auth([KEY]))


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[Server]:
    """Run an ASGI app under uvicorn in a daemon thread, on a socket bound here."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Uvicorn(
        uvicorn.Config(
            app, lifespan="on", log_level="warning", loop="asyncio",
            timeout_graceful_shutdown=2,
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("in-process tether server did not start")
        time.sleep(0.01)
    try:
        yield Server("127.0.0.1", port, app)
    finally:
        if server.loop is not None:
            server.loop.call_soon_threadsafe(app.shutdown)
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def full_server() -> Iterator[Server | None]:
    if not registry_available():
        yield None
        return
    with serve_in_thread(full_app(_config())) as srv:
        yield srv


@pytest.fixture
def server(full_server: Server | None) -> Server:
    """The whole tether app (session API and streams), keys required."""
    if full_server is None:
        pytest.skip("tether.providers.registry has not landed yet (the session API needs it)")
    return full_server


@pytest.fixture(scope="session")
def streams_only_server(full_server: Server | None) -> Iterator[Server]:
    if full_server is not None:
        yield full_server
        return
    with serve_in_thread(StreamsOnly(_config())) as srv:
        yield srv


@pytest.fixture
def stream_server(streams_only_server: Server) -> Server:
    """A server of the Durable Streams endpoints (the full app once it can be built)."""
    return streams_only_server


@pytest.fixture
def proxy(streams_only_server: Server) -> Iterator[TcpProxy]:
    with TcpProxy(streams_only_server.host, streams_only_server.port) as p:
        yield p
