"""A custom agent calls the server's models (``ctx.model(...)``) with no key of its own.

A real ``tether serve`` child serves ``server_model_agents:app`` in front of a
local upstream that speaks OpenAI's streaming format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import agent_server_env, start
from providers.fake_upstreams import FakeUpstream, Script
from sessions.grammar import violations

KEY = "sk-upstream-5b8e2f7a9c01"
AGENTS = Path(__file__).parent


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with (
        FakeUpstream() as fake,
        TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=agent_server_env(fake.openai_base_url, KEY, AGENTS),
            extra_args=["server_model_agents:app"],
        ) as server,
    ):
        yield fake, server


async def answer(server: TetherServer, agent: str, content: str) -> tuple[dict, list[dict]]:
    """Ask ``agent``; its answer (the session's last message) and the session's events."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": agent}, {"content": content})
        try:
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()
    assert end["reason"] == "complete", server.output()
    assert violations(events.seen) == []
    return snapshot["messages"][-1], events.seen


async def test_what_the_model_streams_is_the_answer_and_the_upstream_gets_the_servers_key(
    setup,
) -> None:
    fake, server = setup
    fake.script = Script(text="Paris is sunny today.")
    message, seen = await answer(server, "relay", "Weather in Paris?")

    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert [p["text"] for p in message["parts"]] == ["Paris is sunny today."]
    deltas = [e for e in seen if e["type"] == "part-delta"]
    assert len(deltas) == 4  # streamed a word at a time, as the upstream sent it
    assert message["usage"]["input_tokens"] == 11
    assert KEY not in json.dumps(seen) and KEY not in server.output()


async def test_with_emit_false_only_the_agents_own_text_is_the_answer(setup) -> None:
    fake, server = setup
    fake.script = Script(text="Paris is sunny today.")
    message, _ = await answer(server, "quiet", "Weather?")
    assert [p["text"] for p in message["parts"]] == ["The model said 4 words."]


async def test_the_stream_gives_the_agent_typed_parts(setup) -> None:
    fake, server = setup
    fake.script = Script(text="one two three")
    message, _ = await answer(server, "counter", "Count")
    assert [p["text"] for p in message["parts"]] == ["3 pieces"]


async def test_a_transient_failure_is_retried_and_the_retry_announced(setup) -> None:
    fake, server = setup
    fake.fail_next(1, 503)
    fake.script = Script(text="At last.")
    message, seen = await answer(server, "relay", "Hello?")
    [retry] = [e for e in seen if e["type"] == "retry"]
    assert retry["attempt"] == 1 and "503" in retry["error"]
    assert len(fake.requests) == 2
    assert [p["text"] for p in message["parts"]] == ["At last."]


async def test_cancel_stops_the_upstream_request(setup) -> None:
    fake, server = setup
    fake.script = Script(text="one two three four five", hang_after=2)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "relay"}, {"content": "Talk"})
        try:
            await events.until(lambda e: e["type"] == "part-delta")
            r = await c.post(f"/v1/sessions/{sid}/cancel", json={"run_id": run_id})
            assert r.status_code == 202
            await fake.wait_disconnect()
            end = await events.run_end(run_id)
        finally:
            await events.aclose()
    assert end["reason"] == "cancelled"
    assert violations(events.seen) == []
