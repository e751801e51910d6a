"""A Pydantic AI agent served by tether: its model calls go through tether's provider and key.

A real ``tether serve`` child serves ``pydantic_agents:app`` (a real
``pydantic_ai.Agent`` with tools) in front of a local upstream that speaks
OpenAI's streaming format; the tests talk to it over HTTP as any client would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import agent_server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from sessions.grammar import violations

KEY = "sk-upstream-7d1e0b9c4a52"
AGENTS = Path(__file__).parent
OSLO = '{"city": "Oslo"}'


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with (
        FakeUpstream() as fake,
        TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=agent_server_env(fake.openai_base_url, KEY, AGENTS),
            extra_args=["pydantic_agents:app"],
        ) as server,
    ):
        yield fake, server


async def test_a_tool_using_agent_answers_over_two_model_steps_through_tethers_provider(
    setup,
) -> None:
    fake, server = setup
    args = '{"city": "Paris"}'
    fake.replies.extend(
        [
            Script(text="Let me look.", tool_calls=[FakeToolCall("get_weather", args, "call_W")]),
            Script(text="It is sunny in Paris."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Paris?"})
        try:
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()

    assert end["reason"] == "complete", server.output()
    assert violations(events.seen) == []
    first, second = (r for r in fake.requests if r.path == "/v1/chat/completions")
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["model"] == "gpt-4o-mini"
    offered = {t["function"]["name"]: t for t in first.body["tools"]}
    assert offered["get_weather"]["type"] == "function"
    assert offered["get_weather"]["function"]["description"] == "The weather in a city."
    schema = offered["get_weather"]["function"]["parameters"]
    assert schema["type"] == "object" and schema["properties"] == {"city": {"type": "string"}}
    assert first.body["messages"] == [
        {"role": "system", "content": "You answer questions about the weather."},
        {"role": "user", "content": "Paris?"},
    ]
    call, result = second.body["messages"][2:]
    [asked] = call["tool_calls"]
    assert asked["id"] == "call_W" and asked["function"]["name"] == "get_weather"
    assert json.loads(asked["function"]["arguments"]) == {"city": "Paris"}
    assert result["tool_call_id"] == "call_W"
    assert json.loads(result["content"]) == {"city": "Paris", "sky": "sunny", "c": 21}

    answer = snapshot["messages"][-1]
    assert [p["kind"] for p in answer["parts"]] == ["text", "tool-call", "text"]
    text, tool, final = answer["parts"]
    assert text["text"] == "Let me look." and final["text"] == "It is sunny in Paris."
    assert tool["tool_name"] == "get_weather" and tool["value"] == {"city": "Paris"}
    assert tool["result"] == {"city": "Paris", "sky": "sunny", "c": 21}
    assert tool["needs_approval"] is False
    # The arguments streamed into the session as the model produced them.
    deltas = [e["delta"] for e in events.seen if e["type"] == "part-delta"
              and e["part_id"] == tool["id"]]  # fmt: skip
    assert len(deltas) > 1 and "".join(deltas) == args
    assert snapshot["usage"]["input_tokens"] == 22  # both model steps
    assert KEY not in json.dumps(events.seen) and KEY not in server.output()


async def test_the_next_turn_gives_the_agent_the_sessions_earlier_turns(setup) -> None:
    fake, server = setup
    args = '{"city": "Paris"}'
    fake.replies.extend(
        [
            Script(text="Let me look.", tool_calls=[FakeToolCall("get_weather", args, "call_W")]),
            Script(text="Sunny."),
            Script(text="Oslo is cold."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Paris?"})
        try:
            await events.run_end(run_id)
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "And Oslo?"})
            end = await events.run_end(r.json()["run_id"])
        finally:
            await events.aclose()
    assert end["reason"] == "complete", server.output()
    sent = fake.requests[2].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[2]["content"] == "Let me look." and sent[2]["tool_calls"][0]["id"] == "call_W"
    assert json.loads(sent[3]["content"]) == {"city": "Paris", "sky": "sunny", "c": 21}
    assert [sent[4]["content"], sent[5]["content"]] == ["Sunny.", "And Oslo?"]


async def test_structured_output_is_the_answers_text(setup) -> None:
    fake, server = setup
    forecast = '{"city": "Rome", "sky": "clear"}'
    fake.replies.append(
        Script(text="", tool_calls=[FakeToolCall("final_result", forecast, "call_F")])
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "forecast"}, {"content": "Rome?"})
        try:
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()
    assert end["reason"] == "complete", server.output()
    assert violations(events.seen) == []
    assert fake.requests[0].body["tool_choice"] == "required"
    [part] = snapshot["messages"][-1]["parts"]  # the output tool's call is not shown
    assert part["kind"] == "text" and json.loads(part["text"]) == {"city": "Rome", "sky": "clear"}


@pytest.mark.parametrize("approved", [True, False])
async def test_a_tool_that_requires_approval_waits_for_tool_approvals(setup, approved) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("book_umbrella", OSLO, "call_U")]),
            Script(text="Done."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Umbrella?"})
        try:
            call = await events.until(lambda e: e.get("tool_name") == "book_umbrella")
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            assert len(fake.requests) == 1  # nothing runs before the answer
            r = await c.post(
                f"/v1/sessions/{sid}/tool-approvals",
                json={"tool_call_id": "call_U", "approved": approved, "reason": "not today"},
            )
            assert r.status_code == 202
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()

    assert end["reason"] == "complete", server.output()
    assert violations(events.seen) == []
    assert call["needs_approval"] is True
    tool = snapshot["messages"][-1]["parts"][0]
    told = fake.requests[1].body["messages"][-1]
    assert told["tool_call_id"] == "call_U"
    if approved:
        assert tool["result"] == "umbrella booked in Oslo"
        assert told["content"] == "umbrella booked in Oslo"
    else:
        assert tool["error"] == "not approved: not today" and "result" not in tool
        assert "not approved: not today" in told["content"]


async def test_an_external_tool_is_answered_by_a_client(setup) -> None:
    fake, server = setup
    question = '{"question": "Sun or rain?"}'
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("ask_user", question, "call_Q")]),
            Script(text="Rain it is."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Plan my day"})
        try:
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            answer = {"tool_call_id": "call_Q", "output": "rain"}
            r = await c.post(f"/v1/sessions/{sid}/tool-results", json=answer)
            assert r.status_code == 202
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()
    assert end["reason"] == "complete", server.output()
    assert violations(events.seen) == []
    tool, text = snapshot["messages"][-1]["parts"]
    assert tool["result"] == "rain" and text["text"] == "Rain it is."
    assert fake.requests[1].body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_Q",
        "content": "rain",
    }
    # The client's result is the call's only one: the agent does not record it again.
    assert [e["type"] for e in events.seen].count("tool-result") == 1


async def test_a_failed_attempt_is_retried_and_what_it_streamed_discarded(setup) -> None:
    fake, server = setup
    fake.replies.extend([Script(text="Half an", truncate=True), Script(text="A whole answer.")])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Hi"})
        try:
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()
    assert end["reason"] == "complete", server.output()
    assert violations(events.seen) == []
    retry = next(e for e in events.seen if e["type"] == "retry")
    half = next(e for e in events.seen if e["type"] == "part-start" and e["kind"] == "text")
    assert retry["discard"] == [half["part_id"]]
    parts = snapshot["messages"][-1]["parts"]
    assert [p["text"] for p in parts] == ["A whole answer."]


async def test_cancel_stops_the_agent_and_its_upstream_request(setup) -> None:
    fake, server = setup
    fake.replies.append(Script(text="one two three four five", hang_after=2))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Talk"})
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
    assert len(fake.requests) == 1
