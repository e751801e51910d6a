"""tether in front of an OpenAI-compatible upstream: the key stays on the server.

The upstream is a local server speaking OpenAI's real streaming wire format;
tether runs as a real child process configured with its URL and key.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

KEY = "sk-upstream-5e1d0c9a7b3f"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with FakeUpstream() as fake:
        env = {
            **os.environ,
            "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
            "TETHER_OPENAI_API_KEY": KEY,
            "TETHER_OPENAI_MODELS": "gpt-4o-mini",
        }
        async with TetherServer(
            tmp_path / "data", log_path=tmp_path / "server.log", env=env
        ) as server:
            yield fake, server


async def run_events(c: httpx.AsyncClient, sid: str, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with c.stream("GET", f"/v1/sessions/{sid}/events") as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                out.append(ev)
                if ev["type"] == "run-end" and ev["run_id"] == run_id:
                    return out
    raise AssertionError("stream ended before the run did")


async def test_completions_stream_through_and_the_key_never_leaves_the_server(setup) -> None:
    fake, server = setup
    fake.script = Script(text="Paris is the capital.", reasoning="Recall geography.")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        models = (await c.get("/v1/models")).json()
        assert "openai/gpt-4o-mini" in [m["id"] for m in models["data"]]
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": "Capital?"})).json()
        evs = await run_events(c, sid, run["run_id"])
        snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        raw = (await c.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"})).text

    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"
    assert fake.requests[-1].body["messages"][-1] == {"role": "user", "content": "Capital?"}
    answer = snapshot["messages"][-1]
    assert [p["kind"] for p in answer["parts"]] == ["reasoning", "text"]
    assert answer["parts"][1]["text"] == "Paris is the capital."
    assert answer["usage"] == {"input_tokens": 11, "output_tokens": 7}
    assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete"]
    for text in (json.dumps(evs), json.dumps(snapshot), raw, server.output()):
        assert KEY not in text


async def test_a_messages_usage_keeps_the_cached_and_reasoning_tokens(setup) -> None:
    fake, server = setup
    fake.script = Script(text="ok", usage=(1200, 300), cache=(1024, 0), reasoning_tokens=256)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})).json()
        evs = await run_events(c, sid, run["run_id"])
        snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
    expected = {
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 1024,
        "reasoning_tokens": 256,
    }
    assert [e["usage"] for e in evs if e["type"] == "message-end"] == [expected]
    assert snapshot["messages"][-1]["usage"] == expected
    assert snapshot["usage"] == expected


async def test_the_snapshot_sums_the_usage_of_every_answer(setup) -> None:
    fake, server = setup
    fake.script = Script(text="ok", usage=(100, 10), cache=(64, 0))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        for text in ("one", "two"):
            run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": text})).json()
            await run_events(c, sid, run["run_id"])
        snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
    assert snapshot["usage"] == {"input_tokens": 200, "output_tokens": 20, "cache_read_tokens": 128}


async def test_upstream_errors_reach_clients_without_the_key(setup) -> None:
    fake, server = setup
    fake.fail_next(1, status=401, message=f"Incorrect API key provided: {KEY}")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})).json()
        evs = await run_events(c, sid, run["run_id"])
    errors = [e for e in evs if e["type"] == "error"]
    assert errors and "401" in errors[0]["message"]
    assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["error"]
    assert KEY not in json.dumps(evs) and KEY not in server.output()


async def test_a_model_tool_call_round_trips_through_a_client(setup) -> None:
    fake, server = setup
    fake.script = Script(text="", tool_calls=[FakeToolCall("lookup", '{"q": "tether"}', "call_9")])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": "find"})).json()
        async with c.stream("GET", f"/v1/sessions/{sid}/events") as r:
            async for line in r.aiter_lines():
                if line.startswith("data: ") and '"tool-call"' in line:
                    call = json.loads(line[6:])
                    fake.script = Script(text="Found it.")
                    res = await c.post(
                        f"/v1/sessions/{sid}/tool-results",
                        json={"tool_call_id": call["tool_call_id"], "output": {"hits": 2}},
                    )
                    assert res.status_code == 202, res.text
                    break
        evs = await run_events(c, sid, run["run_id"])
    follow_up = fake.requests[-1].body["messages"]
    assert follow_up[-2]["tool_calls"][0]["function"]["name"] == "lookup"
    assert follow_up[-1] == {"role": "tool", "tool_call_id": "call_9", "content": '{"hits": 2}'}
    assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete"]


async def test_a_streamed_completion_answers_once_the_upstream_accepts_it(setup) -> None:
    """The headers go out when the upstream's answer starts, not with the first token."""
    fake, server = setup
    body = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        fake.script = Script(text="Warm.")
        (await c.post("/v1/chat/completions", json=body)).raise_for_status()  # pools a connection
        # The upstream answers 200 and its role chunk, then says nothing more.
        fake.script = Script(text="never sent", hang_after=0)
        async with asyncio.timeout(10), c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            sid = r.headers["x-tether-session-id"]
            cancel = await c.post(f"/v1/sessions/{sid}/cancel")
            assert cancel.json() == {"cancelled": [r.headers["x-tether-run-id"]]}
            data = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    chunks = [json.loads(d) for d in data]
    assert [c["choices"][0]["delta"] for c in chunks if "choices" in c] == [
        {"role": "assistant", "content": "", "refusal": None}
    ]
    assert chunks[-1]["error"]["code"] == "run_cancelled"
