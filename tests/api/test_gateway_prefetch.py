"""The gateway's pipelining: the upstream request starts before the session exists.

A prefetched response is taken by its run only for exactly the request the run
would send; otherwise, or when nobody takes it, the upstream request is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from providers.fake_upstreams import FakeUpstream, Script
from tether.agents.gateway import GatewayAgent, GatewaySpec, Prefetch, Prefetches, model_request
from tether.api.app import TetherApp
from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import ChatMessage, ModelRequest, StreamItem, TextDelta, prefetching
from tether.providers.demo import DemoModel
from tether.providers.openai import OpenAIProvider
from tether.providers.registry import ProviderRegistry
from tether.runtime.context import RunContext
from tether.sessions.service import SessionService
from tether.store.sqlite import SqliteStore


class CountingProvider:
    """Streams 'a', 'b', 'c'; counts the streams started and those closed."""

    name = "counting"

    def __init__(self) -> None:
        self.started = 0
        self.closed = 0

    def models(self) -> list[str]:
        return ["m"]

    def begin(self, request: ModelRequest) -> tuple[AsyncIterator[StreamItem], None]:
        return self.stream(request), None  # a prefetch's task sends it

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self.started += 1
        try:
            for text in "abc":
                await asyncio.sleep(0.01)
                yield TextDelta(text)
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        pass


@contextlib.asynccontextmanager
async def gateway_client(
    fake: FakeUpstream, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, TetherApp]]:
    """A client of a tether (in process, on a SQLite file) in front of ``fake``, and the app."""
    provider = OpenAIProvider(base_url=fake.openai_base_url, models=["gpt"])
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    app = TetherApp(store, registry=ProviderRegistry([provider]))
    await app.runtime.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c, app
    finally:
        await app.runtime.aclose()
        await provider.aclose()
        await store.aclose()


async def complete(
    fake: FakeUpstream, tmp_path: Path, bodies: list[dict[str, object]]
) -> tuple[list[httpx.Response], Prefetches]:
    """POST each body to /v1/chat/completions, in turn, of a tether in front of ``fake``.

    Returns the responses and the app's prefetches left behind.
    """
    async with gateway_client(fake, tmp_path) as (c, app):
        return [await c.post("/v1/chat/completions", json=b) for b in bodies], app.prefetches


def content(r: httpx.Response) -> str:
    chunks = [orjson.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def record_takes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    """For each run that looks for its prefetch: (was it written at once, did the run take it)."""
    takes: list[tuple[bool, bool]] = []
    take = Prefetch.take

    def spy(self: Prefetch, req: ModelRequest) -> AsyncIterator[StreamItem] | None:
        out = take(self, req)
        takes.append((self.written, out is not None))
        return out

    monkeypatch.setattr(Prefetch, "take", spy)
    return takes


def request(text: str = "hi") -> ModelRequest:
    return model_request("m", [ChatMessage("user", text)], GatewaySpec("counting/m"))


async def test_a_taken_prefetch_streams_the_one_upstream_response() -> None:
    provider = CountingProvider()
    prefetch = Prefetch(provider, request())
    items = prefetch.take(request())
    assert items is not None
    assert [i.text async for i in items] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert (provider.started, provider.closed) == (1, 1)
    assert prefetch.take(request()) is None  # taken once only


async def test_a_prefetch_for_another_request_is_aborted() -> None:
    provider = CountingProvider()
    prefetch = Prefetch(provider, request("hi"))
    await asyncio.sleep(0)
    assert prefetch.take(request("something else")) is None
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert (provider.started, provider.closed) == (1, 1)


async def test_an_unclaimed_prefetch_is_dropped_after_its_ttl() -> None:
    provider = CountingProvider()
    prefetch = Prefetch(provider, request(), ttl=0.001)
    await asyncio.sleep(0.05)
    assert (provider.started, provider.closed) == (1, 1)
    assert prefetch.take(request()) is None


async def test_a_completion_sends_one_upstream_request_through_its_prefetch(
    tmp_path: Path, monkeypatch
) -> None:
    takes = record_takes(monkeypatch)
    body = {
        "model": "openai/gpt",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "Again?"}]},
        ],
        "stream": True,
    }
    async with FakeUpstream() as fake:
        fake.script = Script(text="Hello there, from upstream.")
        [r], left = await complete(fake, tmp_path, [body])
    assert r.status_code == 200
    assert content(r) == "Hello there, from upstream."
    assert r.text.endswith("data: [DONE]\n\n")
    assert [taken for _, taken in takes] == [True]
    assert len(fake.requests) == 1
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again?"},
    ]
    assert not left


async def test_with_a_warm_pool_the_upstream_request_is_written_before_the_set_up(
    tmp_path: Path, monkeypatch
) -> None:
    takes = record_takes(monkeypatch)
    body = {"model": "openai/gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with FakeUpstream() as fake:
        fake.script = Script(text="Warm and quick.")
        responses, left = await complete(fake, tmp_path, [body, body])
    for r in responses:
        assert r.status_code == 200
        assert content(r) == "Warm and quick."
    # The first found no idle connection (a task sent it); the second went out at once.
    assert [written for written, _ in takes] == [False, True]
    assert len(fake.requests) == 2
    assert not left


async def test_a_bursts_upstream_requests_are_all_written_before_any_set_up(
    tmp_path: Path, monkeypatch
) -> None:
    """Set-ups run while the upstream thinks, not before the next request goes out."""
    body = {"model": "openai/gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    written: list[bool] = []
    seen_by_set_ups: list[int] = []
    init, create = Prefetch.__init__, SessionService.create

    def spy_init(self: Prefetch, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        written.append(self.written)

    async def spy_create(self: SessionService, **kwargs: Any) -> Any:
        seen_by_set_ups.append(len(written))
        return await create(self, **kwargs)

    monkeypatch.setattr(Prefetch, "__init__", spy_init)
    monkeypatch.setattr(SessionService, "create", spy_create)
    async with FakeUpstream() as fake, gateway_client(fake, tmp_path) as (c, _):
        fake.script = Script(text="Together.")
        await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(3)))
        written.clear()
        seen_by_set_ups.clear()
        responses = await asyncio.gather(
            *(c.post("/v1/chat/completions", json=body) for _ in range(3))
        )
    assert [content(r) for r in responses] == ["Together."] * 3
    assert written == [True] * 3  # the first burst left three idle connections
    assert seen_by_set_ups == [3, 3, 3]


async def test_a_written_prefetch_nobody_takes_closes_its_connection() -> None:
    async with FakeUpstream() as fake:
        fake.script = Script(text="first")
        provider = OpenAIProvider(base_url=fake.openai_base_url, models=["gpt"])
        try:
            req = request()
            async for _ in provider.stream(req):  # warms the pool
                pass
            prefetch = Prefetch(provider, req)
            assert prefetch.written
            prefetch.discard()
            assert prefetch.take(req) is None
            # Its answer is never read by anyone: the next stream gets its own.
            fake.script = Script(text="second")
            items = [i.text async for i in provider.stream(req) if isinstance(i, TextDelta)]
            assert "".join(items) == "second"
        finally:
            await provider.aclose()


async def test_a_run_that_ends_before_taking_its_prefetch_is_answered_at_once(
    tmp_path: Path, monkeypatch
) -> None:
    """A streamed completion's headers wait for the upstream only while its run can read it."""

    async def broken(self: GatewayAgent, ctx: RunContext) -> None:
        raise RuntimeError("the agent failed before it asked the model")

    body = {"model": "openai/gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with FakeUpstream() as fake, gateway_client(fake, tmp_path) as (c, app):
        fake.script = Script(text="Warm.")
        assert (await c.post("/v1/chat/completions", json=body)).status_code == 200  # pools one
        monkeypatch.setattr(GatewayAgent, "__call__", broken)
        async with asyncio.timeout(5):  # not the prefetch's 30 s time to live
            r = await c.post("/v1/chat/completions", json=body)
        assert len(fake.requests) == 2  # the second went out as a prefetch nobody took
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert not app.prefetches


async def test_upstreams_over_http_may_be_prefetched_and_the_demo_model_may_not() -> None:
    """The demo model's answer depends on the run id, which a prefetch does not have yet."""
    openai = OpenAIProvider(base_url="http://127.0.0.1:9/v1", models=["gpt"])
    anthropic = AnthropicProvider(base_url="http://127.0.0.1:9", models=["claude"])
    try:
        assert prefetching(openai) and prefetching(anthropic)
        assert not prefetching(DemoModel())
    finally:
        await openai.aclose()
        await anthropic.aclose()
