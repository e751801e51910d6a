"""Server tools (``@app.tool``): the model calls them, the server runs them, the model goes on.

A real ``tether serve apps/tool_app.py:app`` child process in front of a local
upstream speaking OpenAI's streaming format; the tests talk HTTP to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer, tether_command
from helpers.session_events import KEY, is_call, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

APPS = Path(__file__).parent / "apps"
MODEL = {"model": "openai/gpt-4o-mini"}


def app_env(fake: FakeUpstream) -> dict[str, str]:
    env = server_env(fake)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with (
        FakeUpstream() as fake,
        TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=app_env(fake),
            extra_args=["tool_app:app"],
        ) as server,
    ):
        yield fake, server


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def call_parts(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every tool-call part of the snapshot's messages, by call id."""
    return {
        p["tool_call_id"]: p
        for m in snapshot["messages"]
        for p in m["parts"]
        if p["kind"] == "tool-call"
    }


async def run_to_end(
    server: TetherServer, session: dict[str, Any], message: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Send ``message`` to a new session; its run's end, the snapshot and the events."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, session, message)
        try:
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()
    return end, snapshot, events.seen


async def test_sync_and_async_server_tools_run_and_the_model_reads_their_results(setup) -> None:
    fake, _server = setup
    fake.replies.extend(
        [
            Script(
                text="Checking.",
                tool_calls=[
                    FakeToolCall("get_weather", '{"city": "Oslo"}', "call_W"),
                    FakeToolCall("add", '{"a": 2, "b": 40}', "call_A"),
                ],
            ),
            Script(text="Sunny, and 42."),
        ]
    )
    session = {**MODEL, "tools": ["get_weather", "add"]}
    end, snapshot, seen = await run_to_end(_server, session, {"content": "Oslo, and 2+40?"})

    assert end["reason"] == "complete"
    offered = fake.requests[0].body["tools"]
    weather = next(t["function"] for t in offered if t["function"]["name"] == "get_weather")
    assert weather["description"] == "The weather in a city."
    assert weather["parameters"]["properties"]["unit"] == {
        "enum": ["C", "F"], "default": "C", "type": "string"
    }  # fmt: skip
    assert weather["parameters"]["required"] == ["city"]
    expected = {"city": "Oslo", "sky": "sunny", "unit": "C", "worker_thread": True}
    assert tool_messages(fake.requests[1].body) == [
        {"role": "tool", "tool_call_id": "call_W", "content": json.dumps(expected)},
        {"role": "tool", "tool_call_id": "call_A", "content": "42"},
    ]
    parts = call_parts(snapshot)
    assert parts["call_W"]["result"] == expected
    assert parts["call_A"]["result"] == 42
    # No person was asked: a server tool without approval just runs.
    assert "paused" not in [e["status"] for e in seen if e["type"] == "status"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            FakeToolCall("add", '{"a": "two"}', "call_X"),
            "InvalidArguments: invalid arguments: a: Input should be a valid integer, "
            "unable to parse string as an integer; b: Field required",
        ),
        (
            FakeToolCall("add", '{"a": 1, "b": 2, "c": 3}', "call_X"),
            "InvalidArguments: invalid arguments: c: Extra inputs are not permitted",
        ),
        (
            FakeToolCall("explode", '{"reason": "on purpose"}', "call_X"),
            "RuntimeError: exploded: on purpose",
        ),
    ],
    ids=["invalid-arguments", "unknown-argument", "raises"],
)
async def test_a_failing_call_is_an_error_the_model_is_given_and_the_run_completes(
    setup, call: FakeToolCall, error: str
) -> None:
    fake, server = setup
    fake.replies.extend([Script(text="", tool_calls=[call]), Script(text="Sorry.")])
    session = {**MODEL, "tools": ["add", "explode"]}
    end, snapshot, _ = await run_to_end(server, session, {"content": "go"})
    assert end["reason"] == "complete"
    assert tool_messages(fake.requests[1].body) == [
        {"role": "tool", "tool_call_id": "call_X", "content": f"Error: {error}"}
    ]
    part = call_parts(snapshot)["call_X"]
    assert part["error"] == error and part.get("result") is None
    assert snapshot["messages"][-1]["parts"][-1]["text"] == "Sorry."


@pytest.mark.parametrize("approved", [True, False], ids=["approved", "denied"])
async def test_an_approval_gated_tool_runs_only_once_a_person_approves(
    setup, tmp_path: Path, approved: bool
) -> None:
    fake, server = setup
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    args = json.dumps({"path": str(victim)})
    fake.replies.extend(
        [Script(text="", tool_calls=[FakeToolCall("delete_file", args, "call_D")]),
         Script(text="Done.")]
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, run_id, events = await start(
            c, {**MODEL, "tools": ["delete_file"]}, {"content": "clean up"}
        )
        try:
            call = await events.until(is_call("delete_file"))
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
            assert victim.exists()  # nothing ran before the verdict
            verdict = {"tool_call_id": "call_D", "approved": approved, "reason": "not that one"}
            r = await c.post(f"/v1/sessions/{sid}/tool-approvals", json=verdict)
            assert r.status_code == 202, r.text
            end = await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()

    assert end["reason"] == "complete"
    assert call["needs_approval"] is True
    told = tool_messages(fake.requests[1].body)[0]["content"]
    part = call_parts(snapshot)["call_D"]
    if approved:
        assert not victim.exists()
        assert told == f"deleted {victim}"
        assert part["result"] == f"deleted {victim}"
    else:
        assert victim.read_text() == "still here"
        assert told == "Error: not approved: not that one"
        assert part["error"] == "not approved: not that one"


async def test_an_agents_default_tools_come_before_the_sessions_own(setup) -> None:
    fake, server = setup
    fake.script = Script(text="", tool_calls=[FakeToolCall("add", '{"a": 20, "b": 22}', "call_1")])
    session = {"agent": "mathy", "tools": ["get_weather"]}
    end, snapshot, _ = await run_to_end(server, session, {"content": "20+22?"})
    assert end["reason"] == "complete"
    offered = [t["function"]["name"] for t in fake.requests[0].body["tools"]]
    assert offered == ["add", "get_weather"]
    assert call_parts(snapshot)["call_1"]["result"] == 42
    assert snapshot["messages"][-1]["parts"][-1]["text"] == "42"


async def test_get_tools_lists_the_apps_tools_and_refuses_bad_declarations(setup) -> None:
    _, server = setup
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        listed = (await c.get("/v1/tools")).json()
        r = await c.post("/v1/sessions", json={**MODEL, "tools": ["add", "no_such_tool"]})
        openapi = (await c.get("/openapi.json")).json()
    tools = {t["name"]: t for t in listed["tools"]}
    assert list(tools) == ["get_weather", "add", "explode", "delete_file"]
    assert tools["add"] == {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        "approval": False,
        "source": "app",
    }
    assert tools["delete_file"]["approval"] is True
    assert listed["mcp_servers"] == []
    assert r.status_code == 400 and "no server tool 'no_such_tool'" in r.text
    assert "/v1/tools" in openapi["paths"]
    assert KEY not in server.output()


async def test_get_tools_is_behind_auth_like_the_other_routes(tmp_path: Path) -> None:
    key = {"Authorization": "Bearer key-a"}
    async with FakeUpstream() as fake:
        env = {**app_env(fake), "TETHER_API_KEYS": "key-a"}
        async with (
            TetherServer(
                tmp_path / "data", log_path=tmp_path / "log", env=env, extra_args=["tool_app:app"]
            ) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
        ):
            anonymous = await c.get("/v1/tools")
            wrong = await c.get("/v1/tools", headers={"Authorization": "Bearer key-b"})
            allowed = await c.get("/v1/tools", headers=key)
            sid = (await c.post("/v1/sessions", json={}, headers=key)).json()["id"]
            r = await c.post(f"/v1/sessions/{sid}/read-token", json={}, headers=key)
            by_read_token = await c.get("/v1/tools", params={"token": r.json()["token"]})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert allowed.status_code == 200 and len(allowed.json()["tools"]) == 4
    assert by_read_token.status_code == 401, by_read_token.text


async def test_tether_chat_asks_to_approve_a_server_tool_and_never_for_its_result(
    setup, tmp_path: Path
) -> None:
    fake, server = setup
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    args = json.dumps({"path": str(victim)})
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("delete_file", args, "call_D")]),
            Script(text="", tool_calls=[FakeToolCall("add", '{"a": 2, "b": 3}', "call_A")]),
            Script(text="All done."),
        ]
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        r = await c.post("/v1/sessions", json={**MODEL, "tools": ["delete_file", "add"]})
        sid = r.json()["id"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [*tether_command(), "chat", "--url", server.base_url, "--session", sid],
        input="clean up\ny\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"approve delete_file({args})? [y/N]" in proc.stdout
    assert "result of" not in proc.stdout  # the server ran both tools itself
    assert "All done." in proc.stdout
    assert not victim.exists()
