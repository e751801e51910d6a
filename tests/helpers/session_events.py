"""A session's events, read live over SSE in the background, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx

from providers.fake_upstreams import FakeUpstream

#: The upstream key tether is configured with: it must never leave the server.
KEY = "sk-upstream-0c4f9a1d2e7b"


def server_env(fake: FakeUpstream) -> dict[str, str]:
    """``tether serve``'s environment: the fake's OpenAI and Anthropic dialects, with KEY."""
    return {
        **os.environ,
        "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
        "TETHER_OPENAI_API_KEY": KEY,
        "TETHER_OPENAI_MODELS": "gpt-4o-mini",
        "TETHER_ANTHROPIC_BASE_URL": fake.url,
        "TETHER_ANTHROPIC_API_KEY": KEY,
        "TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5",
    }


def agent_server_env(upstream_url: str, key: str, agents_dir: Path) -> dict[str, str]:
    """``tether serve``'s environment: an OpenAI-compatible upstream, ``agents_dir`` on the path."""
    path = os.pathsep.join(p for p in (str(agents_dir), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "TETHER_OPENAI_BASE_URL": upstream_url,
        "TETHER_OPENAI_API_KEY": key,
        "TETHER_OPENAI_MODELS": "gpt-4o-mini",
    }


class Events:
    """A session's events read live from the start, in the background."""

    def __init__(self, client: httpx.AsyncClient, session_id: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, session_id))

    async def _read(self, client: httpx.AsyncClient, session_id: str) -> None:
        async with client.stream("GET", f"/v1/sessions/{session_id}/events?offset=-1") as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    self.seen.append(json.loads(line[6:]))
                    self._changed.set()

    async def until(self, check: Any, timeout: float = 15.0) -> dict[str, Any]:
        """The first event ``check`` accepts, waiting for it."""
        async with asyncio.timeout(timeout):
            while True:
                for e in self.seen:
                    if check(e):
                        return e
                self._changed.clear()
                await self._changed.wait()

    async def run_end(self, run_id: str) -> dict[str, Any]:
        return await self.until(lambda e: e["type"] == "run-end" and e["run_id"] == run_id)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def start(
    c: httpx.AsyncClient, session: dict[str, Any], message: dict[str, Any]
) -> tuple[str, str, Events]:
    """Create a session, follow its events, send it a message: (session id, run id, events)."""
    r = await c.post("/v1/sessions", json=session)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    events = Events(c, sid)
    r = await c.post(f"/v1/sessions/{sid}/messages", json=message)
    assert r.status_code == 202, r.text
    return sid, r.json()["run_id"], events


def is_call(name: str) -> Any:
    return lambda e: e["type"] == "part-start" and e.get("tool_name") == name
