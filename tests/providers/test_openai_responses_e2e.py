"""A Responses-wire upstream behind a real ``tether serve``: sessions and the chat front.

tether is configured with ``TETHER_OPENAI_API=responses``, the fake's URL and
a key, and no model list; the session API and the chat completions front (the
official ``openai`` package) reach the upstream's ``POST /v1/responses``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from helpers.server import TetherServer

from .fake_upstreams import FakeToolCall, FakeUpstream, Script

KEY = "sk-upstream-4a6c8e0b2d4f6a8c"
MODEL = "openai/gpt-5"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with FakeUpstream() as fake:
        fake.models = ["gpt-5"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env |= {
            "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
            "TETHER_OPENAI_API_KEY": KEY,
            "TETHER_OPENAI_API": "responses",
        }
        server = TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env)
        async with server:
            yield fake, server
        assert KEY not in server.output()


async def test_a_session_runs_on_the_responses_upstream(
    stack: tuple[FakeUpstream, TetherServer],
) -> None:
    fake, server = stack
    fake.script = Script(
        text="Paris.", reasoning="Geography.", usage=(900, 40), cache=(512, 0), reasoning_tokens=16
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        r = await c.post("/v1/sessions", json={"model": MODEL, "system": "Be brief."})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": "Capital?"})).json()
        async with c.stream("GET", f"/v1/sessions/{sid}/events") as events:
            async for line in events.aiter_lines():
                event = json.loads(line[6:]) if line.startswith("data: ") else {}
                if event.get("type") == "run-end" and event["run_id"] == run["run_id"]:
                    break
        answer = (await c.get(f"/v1/sessions/{sid}")).json()["messages"][-1]
    assert event["reason"] == "complete"
    assert [(p["kind"], p["text"]) for p in answer["parts"]] == [
        ("reasoning", "Geography."),
        ("text", "Paris."),
    ]
    assert answer["usage"] == {
        "input_tokens": 900,
        "output_tokens": 40,
        "cache_read_tokens": 512,
        "reasoning_tokens": 16,
    }
    (sent,) = [r for r in fake.requests if r.path == "/v1/responses"]
    assert sent.body["instructions"] == "Be brief."
    assert sent.body["input"] == [{"type": "message", "role": "user", "content": "Capital?"}]
    assert sent.body["store"] is False and sent.body["model"] == "gpt-5"


async def test_the_chat_front_round_trips_a_tool_call_through_the_responses_upstream(
    stack: tuple[FakeUpstream, TetherServer],
) -> None:
    fake, server = stack
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("lookup", '{"q": "tether"}', id="call_9")]),
            Script(text="It is a durable gateway."),
        ]
    )
    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    async with client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is tether?"}],
            tools=[LOOKUP],  # type: ignore[list-item]
            stream=True,
        )
        calls = [
            call
            async for chunk in stream
            for choice in chunk.choices
            for call in choice.delta.tool_calls or ()
        ]
        arguments = "".join(c.function.arguments or "" for c in calls if c.function)
        assert calls[0].id == "call_9" and json.loads(arguments) == {"q": "tether"}
        answer = await client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "What is tether?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": arguments},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_9", "content": "A gateway."},
            ],
            tools=[LOOKUP],  # type: ignore[list-item]
        )
    assert answer.choices[0].message.content == "It is a durable gateway."
    first, second = [r.body for r in fake.requests if r.path == "/v1/responses"]
    assert first["tools"][0]["name"] == "lookup"
    call, output = second["input"][1:]
    assert {k: call[k] for k in ("type", "call_id", "name")} == {
        "type": "function_call",
        "call_id": "call_9",
        "name": "lookup",
    }
    assert json.loads(call["arguments"]) == {"q": "tether"}
    assert output == {"type": "function_call_output", "call_id": "call_9", "output": "A gateway."}
