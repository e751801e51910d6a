"""``POST /v1/chat/completions`` is served by TetherApp directly, not through FastAPI.

The fast path must answer exactly as the routed endpoint does, and answer
failures FastAPI's exception handlers used to catch in OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from providers.fake_upstreams import FakeUpstream, Script
from tether.api.app import TetherApp
from tether.providers.openai import OpenAIProvider
from tether.providers.registry import ProviderRegistry
from tether.store.base import CreateRequest
from tether.store.errors import BackendUnavailable
from tether.store.sqlite import SqliteStore

BODY = {"model": "openai/gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


class OutageStore(SqliteStore):
    """A store whose new streams fail as an unreachable Redis does (or with ``error``)."""

    error: Exception = BackendUnavailable("cannot reach Redis at redis://redis.internal:6379/0")

    async def create(self, path: str, req: CreateRequest) -> Any:
        raise self.error


@asynccontextmanager
async def served(store: SqliteStore, fake: FakeUpstream) -> AsyncIterator[TetherApp]:
    provider = OpenAIProvider(base_url=fake.openai_base_url, models=["gpt"], api_key="sk-up-91f3")
    await store.open()
    app = TetherApp(store, registry=ProviderRegistry([provider]))
    await app.runtime.start()
    try:
        yield app
    finally:
        await app.runtime.aclose()
        await provider.aclose()
        await store.aclose()


async def post(app: Any, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return await client.post("/v1/chat/completions", json=body)


def content(r: httpx.Response) -> str:
    chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_the_fast_path_and_the_routed_endpoint_answer_the_same(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        fake.script = Script(text="Same either way.")
        async with served(SqliteStore(tmp_path / "log.db"), fake) as app:
            fast = await post(app, BODY)
            routed = await post(app.web, BODY)
            bad_fast = await post(app, {**BODY, "messages": []})
            bad_routed = await post(app.web, {**BODY, "messages": []})
    for r in (fast, routed):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-tether-stream-url"].startswith("/v1/chat/completions/ses")
        assert content(r) == "Same either way."
        assert r.text.endswith("data: [DONE]\n\n")
    assert fast.headers["x-tether-session-id"] != routed.headers["x-tether-session-id"]
    assert bad_fast.status_code == bad_routed.status_code == 400
    assert bad_fast.json() == bad_routed.json()


async def test_a_store_outage_is_a_503_in_openai_shape_with_retry_after(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, served(OutageStore(tmp_path / "log.db"), fake) as app:
        r = await post(app, BODY)
        sessions, _ = await app.sessions.page(None, archived=True, limit=100, gateway=True)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    error = r.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "store_unavailable"
    assert "cannot reach Redis" in error["message"]
    assert "sk-up-91f3" not in r.text
    assert sessions == []


async def test_an_unexpected_failure_is_a_500_in_openai_shape(tmp_path: Path) -> None:
    store = OutageStore(tmp_path / "log.db")
    store.error = RuntimeError("disk on fire at /srv/secret-path")
    async with FakeUpstream() as fake, served(store, fake) as app:
        r = await post(app, BODY)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["type"] == "server_error"
    assert "secret-path" not in r.text  # details go to the log, not to the client
