"""A model session with tools: the model calls them, clients answer, the model goes on.

tether runs as a real child process in front of a local upstream that speaks
OpenAI's (or Anthropic's) real streaming format; the tests talk to it over HTTP
as any client would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import KEY, Events, is_call, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from sessions.grammar import Grammar
from tether.client import AsyncTether

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CLOCK = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with (
        FakeUpstream() as fake,
        TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=server_env(fake),
            extra_args=["--max-steps", "3"],
        ) as server,
    ):
        yield fake, server


async def test_a_client_tool_round_trip_over_two_model_steps(setup) -> None:
    fake, server = setup
    args = '{"city": "Paris"}'
    fake.replies.extend(
        [
            Script(text="Let me look.", tool_calls=[FakeToolCall("get_weather", args, "call_W")]),
            Script(text="It is sunny in Paris."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(
            c, {"model": "openai/gpt-4o-mini", "tools": [WEATHER]}, {"content": "Weather?"}
        )
        try:
            call = await events.until(is_call("get_weather"))
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            r = await c.post(
                f"/v1/sessions/{sid}/tool-results",
                json={"tool_call_id": "call_W", "output": {"sky": "sunny", "c": 21}},
            )
            assert r.status_code == 202
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()

    assert end["reason"] == "complete"
    assert Grammar().check(events.seen) == []
    assert call["tool_call_id"] == "call_W"
    # The arguments streamed as deltas while the model produced them, then whole.
    deltas = [e["delta"] for e in events.seen if e.get("part_id") == call["part_id"]
              and e["type"] == "part-delta"]  # fmt: skip
    assert len(deltas) > 1 and "".join(deltas) == args
    ended = [e for e in events.seen if e["type"] == "part-end" and e["part_id"] == call["part_id"]]
    assert ended[0]["value"] == {"city": "Paris"}

    first, second = fake.requests[0].body, fake.requests[1].body
    offered = [{"type": "function", "function": WEATHER}]
    assert first["tools"] == offered and second["tools"] == offered
    assert first["messages"] == [{"role": "user", "content": "Weather?"}]
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_W", "type": "function",
                 "function": {"name": "get_weather", "arguments": args}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_W", "content": '{"sky": "sunny", "c": 21}'},
    ]  # fmt: skip
    answer = snapshot["messages"][-1]
    assert [p["kind"] for p in answer["parts"]] == ["text", "tool-call", "text"]
    assert answer["parts"][1]["result"] == {"sky": "sunny", "c": 21}
    assert answer["parts"][2]["text"] == "It is sunny in Paris."
    assert snapshot["usage"]["input_tokens"] == 22  # both steps' usage, summed
    assert KEY not in json.dumps(events.seen) and KEY not in server.output()


async def test_parallel_calls_in_one_step_are_answered_in_any_order(setup) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(
                text="",
                tool_calls=[
                    FakeToolCall("get_weather", '{"city": "Oslo"}', "call_1"),
                    FakeToolCall("get_time", "{}", "call_2"),
                ],
            ),
            Script(text="Cold, and it is noon."),
        ]
    )
    session = {"model": "openai/gpt-4o-mini", "tools": [WEATHER, CLOCK]}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, session, {"content": "Oslo?"})
        try:
            await events.until(is_call("get_time"))
            # The run pauses after it writes the calls: answered before that, it
            # would not pause at all, and the statuses below would be different.
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            for call_id, output in (("call_2", "12:00"), ("call_1", "-3 C")):
                r = await c.post(
                    f"/v1/sessions/{sid}/tool-results",
                    json={"tool_call_id": call_id, "output": output},
                )
                assert r.status_code == 202
            end = await events.run_end(run_id)
        finally:
            await events.aclose()
    assert end["reason"] == "complete"
    assert Grammar().check(events.seen) == []
    assert len(fake.requests) == 2
    tool_messages = [m for m in fake.requests[1].body["messages"] if m["role"] == "tool"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
    ]
    statuses = [e["status"] for e in events.seen if e["type"] == "status"]
    assert statuses == ["running", "paused", "running", "idle"]


async def test_anthropic_gets_the_tools_and_the_results_in_its_own_format(setup) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="Checking.", tool_calls=[FakeToolCall("get_weather", '{"city": "Rome"}',
                                                              "toolu_R")]),
            Script(text="Warm."),
        ]
    )  # fmt: skip
    session = {"model": "anthropic/claude-sonnet-4-5", "tools": [WEATHER]}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, session, {"content": "Rome?"})
        try:
            await events.until(is_call("get_weather"))
            await c.post(
                f"/v1/sessions/{sid}/tool-results",
                json={"tool_call_id": "toolu_R", "error": "the weather service is down"},
            )
            end = await events.run_end(run_id)
        finally:
            await events.aclose()
    assert end["reason"] == "complete"
    first, second = fake.requests[0].body, fake.requests[1].body
    assert first["tools"] == [
        {"name": "get_weather", "input_schema": WEATHER["parameters"],
         "description": WEATHER["description"]}
    ]  # fmt: skip
    assert second["messages"][-2]["content"][-1] == {
        "type": "tool_use", "id": "toolu_R", "name": "get_weather", "input": {"city": "Rome"},
    }  # fmt: skip
    assert second["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_R",
         "content": "the weather service is down", "is_error": True}
    ]  # fmt: skip


async def test_a_messages_tools_are_offered_to_its_run_only(setup) -> None:
    fake, server = setup
    fake.script = Script(text="ok")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(
            c, {"model": "openai/gpt-4o-mini"}, {"content": "one", "tools": [CLOCK]}
        )
        try:
            await events.run_end(run_id)
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "two"})
            await events.run_end(r.json()["run_id"])
        finally:
            await events.aclose()
    assert [t["function"]["name"] for t in fake.requests[0].body["tools"]] == ["get_time"]
    assert "tools" not in fake.requests[1].body


async def test_tools_set_by_patch_apply_to_the_next_runs(setup) -> None:
    fake, server = setup
    fake.script = Script(text="ok")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        r = await c.patch(f"/v1/sessions/{sid}", json={"tools": [WEATHER]})
        assert r.status_code == 200 and r.json()["tools"] == [WEATHER]
        events = Events(c, sid)
        try:
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
            await events.run_end(r.json()["run_id"])
        finally:
            await events.aclose()
    assert [t["function"]["name"] for t in fake.requests[0].body["tools"]] == ["get_weather"]


async def test_a_model_that_keeps_calling_tools_stops_at_max_steps(setup) -> None:
    fake, server = setup
    fake.replies.extend(
        Script(text="", tool_calls=[FakeToolCall("get_time", "{}", f"call_{i}")]) for i in range(5)
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(
            c, {"model": "openai/gpt-4o-mini", "tools": [CLOCK]}, {"content": "loop"}
        )
        try:
            for i in range(3):  # --max-steps 3
                call_id = f"call_{i}"
                await events.until(lambda e, c=call_id: e.get("tool_call_id") == c)
                await c.post(
                    f"/v1/sessions/{sid}/tool-results",
                    json={"tool_call_id": call_id, "output": "noon"},
                )
            end = await events.run_end(run_id)
        finally:
            await events.aclose()
    assert len(fake.requests) == 3
    assert end["reason"] == "error"
    error = next(e for e in events.seen if e["type"] == "error")
    assert error["code"] == "max_steps" and "3 steps" in error["message"]


@pytest.mark.parametrize(
    ("tools", "says"),
    [
        ([{"name": "bad name!", "parameters": {"type": "object"}}], "'name'"),
        ([{"name": "f", "parameters": {"type": "array"}}], "type object"),
        ([{"name": "f", "params": {}}], "unknown field"),
        (["no_such_server_tool"], "no server tool 'no_such_server_tool'"),
        ([CLOCK, CLOCK], "declared twice"),
        ([{"name": f"t{i}"} for i in range(129)], "128"),
    ],
)
async def test_bad_tool_declarations_are_refused_and_change_nothing(
    setup, tools: list[Any], says: str
) -> None:
    _, server = setup
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        r = await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini", "tools": tools})
        assert r.status_code in (400, 422) and says in r.text, r.text
        assert (await c.get("/v1/sessions")).json()["sessions"] == []
        sid = (await c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"})).json()["id"]
        before = (await c.get(f"/v1/sessions/{sid}")).json()
        r = await c.patch(f"/v1/sessions/{sid}", json={"tools": tools})
        assert r.status_code in (400, 422) and says in r.text
        r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "x", "tools": tools})
        assert r.status_code in (400, 422) and says in r.text
        after = (await c.get(f"/v1/sessions/{sid}")).json()
    assert after == before


async def test_the_sdk_answers_a_models_tool_calls_with_its_handlers(setup) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("get_weather", '{"city": "Lima"}', "call_L")]),
            Script(text="Mild in Lima."),
        ]
    )
    async with AsyncTether(server.base_url) as client:
        session = await client.sessions.create(model="openai/gpt-4o-mini", tools=[WEATHER])
        run = await client.send(session.id, "Lima?")
        result = await run.result(tools={"get_weather": lambda city: f"mild in {city}"})
    assert session.tools == [WEATHER]
    assert result.reason == "complete" and result.text == "Mild in Lima."
    assert fake.requests[1].body["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_L", "content": "mild in Lima",
    }  # fmt: skip


async def test_the_ai_sdk_front_offers_the_tools_its_request_defines(setup) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("get_weather", '{"city": "Kyiv"}', "call_K")]),
            Script(text="Snow in Kyiv."),
        ]
    )
    body = {
        "id": "chat-tools",
        "model": "openai/gpt-4o-mini",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Kyiv?"}]}],
        "tools": {
            "get_weather": {
                "description": WEATHER["description"],
                "inputSchema": WEATHER["parameters"],
            }
        },
    }
    chunks: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
        c.stream("POST", "/v1/aisdk/chat", json=body) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            chunks.append(chunk)
            if chunk["type"] == "tool-input-available":
                sid = chunks[0]["messageMetadata"]["tether"]["sessionId"]
                r2 = await c.post(
                    f"/v1/sessions/{sid}/tool-results",
                    json={"tool_call_id": "call_K", "output": "snow"},
                )
                assert r2.status_code == 202
    types = [c["type"] for c in chunks]
    assert "tool-input-delta" in types and types[-1] == "finish"
    assert fake.requests[0].body["tools"] == [{"type": "function", "function": WEATHER}]
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "Snow in Kyiv."
