"""OpenAI Agents SDK agents served by tether: the real SDK, its model calls through tether.

``tests/agents/sdk_agents.py`` serves real ``openai-agents`` agents with
``tether.adapters.openai_agents.serve``; a real ``tether serve`` child runs
them in front of a local upstream that speaks OpenAI's streaming format. The
server has no ``OPENAI_API_KEY`` and the OpenAI client's default base URL
points at a closed port, so any call the SDK made on its own would fail the
run: every model call must go through tether's provider, with its key.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import KEY, is_call, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from sessions.grammar import violations

HERE = Path(__file__).parent
MOVE_OUT = '{"src": "/tmp/a", "dst": "/etc/a"}'
MOVE_IN = '{"src": "/tmp/b", "dst": "/tmp/c"}'


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with FakeUpstream() as fake:
        env = server_env(fake)
        env.pop("OPENAI_API_KEY", None)
        env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"  # discard: nothing listens
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
        async with TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=env,
            extra_args=["sdk_agents:app"],
        ) as server:
            yield fake, server


async def snapshot_of(c: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    """The session's snapshot, once its whole log is checked against the events' grammar."""
    r = await c.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"})
    assert r.headers["stream-up-to-date"] == "true"
    assert violations(r.json()) == []
    return dict((await c.get(f"/v1/sessions/{sid}")).json())


def parts_of(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return list(snapshot["messages"][-1]["parts"])


async def test_an_sdk_agent_with_a_function_tool_answers_over_two_model_steps(setup) -> None:
    fake, server = setup
    args = '{"city": "Paris"}'
    fake.replies.extend(
        [
            Script(
                text="Let me look.",
                reasoning="The tool knows.",
                tool_calls=[FakeToolCall("get_weather", args, "call_W")],
            ),
            Script(text="It is sunny in Paris."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Paris?"})
        try:
            end = await events.run_end(run_id)
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()

    assert end["reason"] == "complete", server.output()
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 2
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    first, second = fake.requests[0].body, fake.requests[1].body
    assert first["model"] == "gpt-4o-mini"
    assert first["messages"] == [
        {"role": "system", "content": "Answer weather questions."},
        {"role": "user", "content": "Paris?"},
    ]
    [tool] = first["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["description"] == "The weather in a city."
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert second["messages"][2] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {"id": "call_W", "type": "function",
             "function": {"name": "get_weather", "arguments": args}}
        ],
    }  # fmt: skip
    tool_message = second["messages"][3]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_W"
    assert "sunny" in tool_message["content"]

    # The session shows the reasoning, the text, the call (its arguments streamed) with its
    # result, and the answer.
    parts = parts_of(snapshot)
    assert [p["kind"] for p in parts] == ["reasoning", "text", "tool-call", "text"]
    assert parts[0]["text"] == "The tool knows." and parts[1]["text"] == "Let me look."
    call = parts[2]
    assert call["tool_name"] == "get_weather" and call["value"] == {"city": "Paris"}
    # No trace was started for the run, so the SDK had nothing to export.
    assert call["result"] == {"city": "Paris", "sky": "sunny", "traced": False}
    assert parts[3]["text"] == "It is sunny in Paris."
    start_event = await events.until(is_call("get_weather"))
    deltas = [e["delta"] for e in events.seen
              if e["type"] == "part-delta" and e["part_id"] == start_event["part_id"]]  # fmt: skip
    assert len(deltas) > 1 and "".join(deltas) == args
    assert snapshot["usage"]["input_tokens"] == 22  # both model calls
    assert KEY not in json.dumps(events.seen) and KEY not in server.output()


async def test_a_handoff_is_a_tool_call_whose_result_names_the_next_agent(setup) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("transfer_to_billing", "{}", "call_H")]),
            Script(text="Your invoice is paid."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "triage"}, {"content": "My invoice?"})
        try:
            end = await events.run_end(run_id)
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()

    assert end["reason"] == "complete", server.output()
    first, second = fake.requests[0].body, fake.requests[1].body
    assert first["messages"][0] == {"role": "system", "content": "Hand billing questions over."}
    assert [t["function"]["name"] for t in first["tools"]] == ["transfer_to_billing"]
    assert second["messages"][0] == {"role": "system", "content": "Answer billing questions."}
    assert "tools" not in second
    parts = parts_of(snapshot)
    assert [p["kind"] for p in parts] == ["tool-call", "text"]
    assert parts[0]["tool_name"] == "transfer_to_billing"
    assert parts[0]["result"] == {"agent": "Billing"}
    assert parts[1]["text"] == "Your invoice is paid."


@pytest.mark.parametrize(
    ("verdict", "told"),
    [
        ({"approved": True}, "deleted /tmp/a"),
        ({"approved": False, "reason": "not today"}, "not approved: not today"),
    ],
)
async def test_a_tool_that_needs_approval_waits_for_a_tether_approval(
    setup, verdict: dict[str, Any], told: str
) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("delete_file", '{"path": "/tmp/a"}', "D")]),
            Script(text="Done."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "files"}, {"content": "Delete /tmp/a"})
        try:
            call = await events.until(is_call("delete_file"))
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            assert len(fake.requests) == 1  # the SDK stopped for the verdict
            r = await c.post(
                f"/v1/sessions/{sid}/tool-approvals", json={"tool_call_id": "D", **verdict}
            )
            assert r.status_code == 202, r.text
            end = await events.run_end(run_id)
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()

    assert end["reason"] == "complete", server.output()
    assert call["needs_approval"] is True
    tool_message = fake.requests[1].body["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "D", "content": told}
    part = parts_of(snapshot)[0]
    if verdict["approved"]:
        assert part["result"] == told and "error" not in part
    else:
        assert part["error"] == told and "result" not in part
    results = [e for e in events.seen if e["type"] == "tool-result"]
    assert len(results) == 1  # one result per call, whoever wrote it
    statuses = [e["status"] for e in events.seen if e["type"] == "status"]
    assert statuses == ["running", "paused", "running", "idle"]


async def test_cancel_stops_the_sdk_run_and_its_upstream_request(setup) -> None:
    fake, server = setup
    fake.script = Script(text="one two three four five six", hang_after=2)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Count"})
        try:
            await events.until(lambda e: e["type"] == "part-delta")
            r = await c.post(f"/v1/sessions/{sid}/cancel", json={"run_id": run_id})
            assert r.status_code == 202, r.text
            end = await events.run_end(run_id)
            await fake.wait_disconnect()
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()
    assert end["reason"] == "cancelled"
    assert snapshot["status"] == "idle" and snapshot["active_run"] is None
    assert len(fake.requests) == 1


async def test_a_tool_whose_approval_depends_on_the_call_is_shown_once_the_sdk_decides(
    setup,
) -> None:
    fake, server = setup
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("move_file", MOVE_OUT, "M1")]),
            Script(text="Moved out."),
            Script(text="", tool_calls=[FakeToolCall("move_file", MOVE_IN, "M2")]),
            Script(text="Moved in."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "files"}, {"content": "Out"})
        try:
            out = await events.until(is_call("move_file"))
            # (Answered before the run pauses, it would not pause: the statuses below.)
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            await c.post(
                f"/v1/sessions/{sid}/tool-approvals", json={"tool_call_id": "M1", "approved": True}
            )
            first_end = await events.run_end(run_id)
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "In"})
            second_end = await events.run_end(r.json()["run_id"])
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()

    assert (first_end["reason"], second_end["reason"]) == ("complete", "complete")
    assert out["tool_call_id"] == "M1" and out["needs_approval"] is True
    moved_in = next(e for e in events.seen if is_call("move_file")(e) and e["tool_call_id"] == "M2")
    assert "needs_approval" not in moved_in
    [call, answer] = parts_of(snapshot)
    assert call["value"] == {"src": "/tmp/b", "dst": "/tmp/c"}
    # The second run gave the SDK the session's branch: the first run's call and result too.
    earlier = fake.requests[2].body["messages"][1:]
    assert [m["role"] for m in earlier] == ["user", "assistant", "tool", "assistant", "user"]
    assert earlier[1]["tool_calls"][0]["id"] == "M1"
    assert earlier[2] == {"role": "tool", "tool_call_id": "M1", "content": "moved /tmp/a to /etc/a"}
    assert earlier[3] == {"role": "assistant", "content": "Moved out."}
    assert call["result"] == "moved /tmp/b to /tmp/c" and answer["text"] == "Moved in."
    assert [e["status"] for e in events.seen if e["type"] == "status"] == [
        "running", "paused", "running", "idle", "running", "idle"
    ]  # fmt: skip


async def test_a_retried_model_call_discards_what_the_failed_attempt_streamed(setup) -> None:
    fake, server = setup
    fake.replies.extend([Script(text="A draft that breaks", truncate=True), Script(text="Sunny.")])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "weather"}, {"content": "Weather?"})
        try:
            end = await events.run_end(run_id)
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()

    assert end["reason"] == "complete", server.output()
    draft = next(e for e in events.seen if e["type"] == "part-start")
    retry = next(e for e in events.seen if e["type"] == "retry")
    assert retry["attempt"] == 1 and retry["discard"] == [draft["part_id"]]
    assert [(p["kind"], p["text"]) for p in parts_of(snapshot)] == [("text", "Sunny.")]
    assert len(fake.requests) == 2


async def test_structured_output_and_model_settings_reach_the_upstream(setup) -> None:
    fake, server = setup
    fake.script = Script(text='{"city": "Oslo", "celsius": -3}')
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "forecaster"}, {"content": "Oslo?"})
        try:
            end = await events.run_end(run_id)
            snapshot = await snapshot_of(c, sid)
        finally:
            await events.aclose()
    assert end["reason"] == "complete", server.output()
    body = fake.requests[0].body
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"city", "celsius"}
    assert parts_of(snapshot)[0]["text"] == '{"city": "Oslo", "celsius": -3}'


async def test_a_hosted_tool_fails_the_run_before_the_upstream_is_called(setup) -> None:
    fake, server = setup
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": "searcher"}, {"content": "Search"})
        try:
            end = await events.run_end(run_id)
            await snapshot_of(c, sid)
        finally:
            await events.aclose()
    assert end["reason"] == "error"
    error = next(e for e in events.seen if e["type"] == "error")
    assert "WebSearchTool" in error["message"] and "function tools" in error["message"]
    assert fake.requests == []
