"""What the subscription tests share: a real server, a real webhook receiver, and waits.

Waits are on events (a long-poll of the wake stream, the receiver's queue), each
bounded generously: a loaded machine is slower than it looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiohttp import web

from helpers.server import TetherServer

#: Bound on every wait for something the server does on its own (a wake, a delivery).
WAIT = 20.0
JSON = {"content-type": "application/json"}


@dataclass
class Delivery:
    body: dict[str, Any]
    raw: bytes
    signature: str | None


@dataclass
class Receiver:
    """A real HTTP webhook receiver on 127.0.0.1; answers from ``answers`` in turn
    (status, JSON body), then with ``default``."""

    port: int = 0
    deliveries: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    default: tuple[int, dict[str, Any]] = (200, {})
    count: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.count += 1
        status, answer = self.answers.pop(0) if self.answers else self.default
        self.deliveries.put_nowait(
            Delivery(orjson.loads(raw), raw, request.headers.get("webhook-signature"))
        )
        return web.json_response(answer, status=status)

    async def next(self, timeout: float = WAIT) -> Delivery:
        return await asyncio.wait_for(self.deliveries.get(), timeout)


async def start_receiver(port: int = 0) -> tuple[Receiver, web.AppRunner]:
    state = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/hook", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    state.port = runner.addresses[0][1]
    return state, runner


async def receiver_fixture() -> AsyncIterator[Receiver]:
    state, runner = await start_receiver()
    try:
        yield state
    finally:
        await runner.cleanup()


class Api:
    """The subscription routes of one server, over real HTTP."""

    def __init__(self, server: TetherServer, key: str | None = None) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.stream_url(""), headers=headers, timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def create_stream(self, path: str, body: Any = None) -> httpx.Response:
        content = b"" if body is None else orjson.dumps(body)
        response = await self.http.put(path, content=content, headers=JSON)
        assert response.status_code in (200, 201), response.text
        return response

    async def append(self, path: str, event: Any) -> str:
        response = await self.http.post(path, content=orjson.dumps(event), headers=JSON)
        assert response.status_code in (200, 204), response.text
        return response.headers["stream-next-offset"]

    async def put_sub(self, sub_id: str, config: dict[str, Any]) -> httpx.Response:
        return await self.http.put(f"__ds/subscriptions/{sub_id}", json=config)

    async def get_sub(self, sub_id: str) -> httpx.Response:
        return await self.http.get(f"__ds/subscriptions/{sub_id}")

    async def links(self, sub_id: str) -> dict[str, dict[str, Any]]:
        response = await self.get_sub(sub_id)
        assert response.status_code == 200, response.text
        return {s["path"]: s for s in response.json()["streams"]}

    async def claim(self, sub_id: str, worker: str) -> httpx.Response:
        return await self.http.post(f"__ds/subscriptions/{sub_id}/claim", json={"worker": worker})

    async def ack(
        self, sub_id: str, token: str, body: dict[str, Any], op: str = "ack"
    ) -> httpx.Response:
        return await self.http.post(
            f"__ds/subscriptions/{sub_id}/{op}",
            json=body,
            headers={"authorization": f"Bearer {token}"},
        )

    async def wakes(self, wake_stream: str, offset: str = "-1") -> tuple[list[Any], str]:
        """The wake events after ``offset``, waiting (long-poll) until there is one."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            response = await self.http.get(
                wake_stream, params={"offset": offset, "live": "long-poll"}
            )
            assert response.status_code in (200, 204), response.text
            offset = response.headers["stream-next-offset"]
            if response.status_code == 200:
                events = response.json()
                if events:
                    return events, offset
            assert asyncio.get_running_loop().time() < deadline, "no wake event came"


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until true (for state the server settles just after answering)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)
