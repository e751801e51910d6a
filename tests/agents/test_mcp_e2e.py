"""MCP toolsets: the config file's MCP servers' tools offered to the model as ``server.tool``.

A real ``tether serve`` child process, with a config file naming an MCP server
written with the ``mcp`` package's own server API: one that tether runs over
stdio (``apps/mcp_calc.py``), and the same served over streamable HTTP by the
test on loopback, behind a bearer token that reaches tether as ``${VAR}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from helpers.server import TetherServer, find_free_port
from helpers.session_events import KEY, Events, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))
from mcp_calc import build  # noqa: E402

TOKEN = "mcp-token-5e1d0c9b8a7f"
MODEL = {"model": "openai/gpt-4o-mini"}

STDIO = f"""
[[mcp_servers]]
name = "calc"
command = "{sys.executable}"
args = ["{APPS / "mcp_calc.py"}"]
"""


def http_config(port: int) -> str:
    return f"""
[[mcp_servers]]
name = "remote"
url = "http://127.0.0.1:{port}/mcp"
headers = {{ Authorization = "Bearer ${{REMOTE_MCP_TOKEN}}" }}
"""


async def serve(tmp_path: Path, fake: FakeUpstream, config: str, *extra: str) -> TetherServer:
    path = tmp_path / "tether.toml"
    path.write_text(config)
    env = {**server_env(fake), "TETHER_CONFIG": str(path), "REMOTE_MCP_TOKEN": TOKEN}
    server = TetherServer(
        tmp_path / "data", log_path=tmp_path / "server.log", env=env, extra_args=list(extra)
    )
    await asyncio.to_thread(server.start)
    return server


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def stdio_server(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[TetherServer]:
    server = await serve(tmp_path, fake, STDIO)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


class BearerOnly:
    """An ASGI wrapper that answers 401 to HTTP requests without the token, and counts them."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.authorized = 0
        self.refused = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if dict(scope["headers"]).get(b"authorization") != self.expected:
                self.refused += 1
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            self.authorized += 1
        await self.app(scope, receive, send)


@pytest.fixture
async def http_mcp() -> AsyncIterator[tuple[int, BearerOnly]]:
    """``apps/mcp_calc.py``'s tools over streamable HTTP on loopback, behind a bearer token."""
    guarded = BearerOnly(build().streamable_http_app(), TOKEN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn has started
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(guarded, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield port, guarded
    finally:
        server.should_exit = True
        await task


async def ask(
    server: TetherServer, message: dict[str, Any], session_id: str | None = None
) -> tuple[str, dict[str, Any], Events]:
    """Send ``message`` (to a new session unless given one); wait for its run's end."""
    c = httpx.AsyncClient(base_url=server.base_url, timeout=30)
    async with c:
        if session_id is None:
            session_id, run_id, events = await start(c, MODEL, message)
        else:
            events = Events(c, session_id)
            r = await c.post(f"/v1/sessions/{session_id}/messages", json=message)
            run_id = r.json()["run_id"]
        try:
            end = await events.run_end(run_id)
        finally:
            await events.aclose()
    return session_id, end, events


def tool_messages(fake: FakeUpstream, request: int) -> list[dict[str, Any]]:
    return [m for m in fake.requests[request].body["messages"] if m["role"] == "tool"]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``check`` (state with no event to wait on: a child process restarting)."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


def alive(pid: int) -> bool:
    """The process exists (a zombie too: a child its parent has not reaped)."""
    return Path(f"/proc/{pid}").exists()


async def test_a_stdio_mcp_servers_tools_are_offered_as_server_tool_and_run(
    stdio_server: TetherServer, fake: FakeUpstream
) -> None:
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("calc__add", '{"a": 2, "b": 40}', "c1")]),
            Script(text="It is 42."),
        ]
    )
    _, end, events = await ask(stdio_server, {"content": "2+40?", "tools": ["calc.add"]})
    assert end["reason"] == "complete"
    # The upstream sees a name it accepts; tether's events keep tether's name.
    offered = fake.requests[0].body["tools"]
    assert [t["function"]["name"] for t in offered] == ["calc__add"]
    assert offered[0]["function"]["description"] == "Add two integers."
    assert offered[0]["function"]["parameters"]["required"] == ["a", "b"]
    call = next(e for e in events.seen if e["type"] == "part-start" and e.get("tool_call_id"))
    assert call["tool_name"] == "calc.add"
    second = fake.requests[1].body["messages"]
    assert second[1]["tool_calls"][0]["function"]["name"] == "calc__add"
    assert tool_messages(fake, 1) == [
        {"role": "tool", "tool_call_id": "c1", "content": '{"result": 42}'}
    ]
    result = next(e for e in events.seen if e["type"] == "tool-result")
    assert result["output"] == {"result": 42}

    async with httpx.AsyncClient(base_url=stdio_server.base_url) as c:
        listed = (await c.get("/v1/tools")).json()
    assert {t["name"]: t["source"] for t in listed["tools"]} == {
        "calc.add": "mcp:calc", "calc.shout": "mcp:calc", "calc.pid": "mcp:calc",
        "calc.fail": "mcp:calc",
    }  # fmt: skip
    assert listed["mcp_servers"] == [
        {"name": "calc", "transport": "stdio", "connected": True, "restarts": 0}
    ]
    assert str(APPS) not in json.dumps(listed)  # how it is run is not shown


async def test_a_failing_mcp_tool_is_an_error_the_model_is_given(
    stdio_server: TetherServer, fake: FakeUpstream
) -> None:
    fake.replies.extend(
        [Script(text="", tool_calls=[FakeToolCall("calc__fail", "{}", "c1")]), Script(text="Oh.")]
    )
    _, end, _ = await ask(stdio_server, {"content": "fail", "tools": ["calc.fail"]})
    assert end["reason"] == "complete"
    assert tool_messages(fake, 1)[0]["content"] == "Error: MCPToolError: Error executing tool fail"


async def test_an_mcp_server_that_dies_is_restarted_and_a_call_in_between_is_an_error(
    stdio_server: TetherServer, fake: FakeUpstream
) -> None:
    tools = ["calc.add", "calc.pid"]
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("calc__pid", "{}", "c1")]),
            Script(text="Got it."),
            Script(text="", tool_calls=[FakeToolCall("calc__add", '{"a": 1, "b": 1}', "c2")]),
            Script(text="The calculator is away."),
            Script(
                text="",
                tool_calls=[
                    FakeToolCall("calc__add", '{"a": 2, "b": 40}', "c3"),
                    FakeToolCall("calc__pid", "{}", "c4"),
                ],
            ),
            Script(text="Back: 42."),
        ]
    )
    sid, end, _ = await ask(stdio_server, {"content": "pid?", "tools": tools})
    first_pid = json.loads(tool_messages(fake, 1)[0]["content"])["result"]
    os.kill(first_pid, signal.SIGKILL)

    _, end, _ = await ask(stdio_server, {"content": "1+1?", "tools": tools}, sid)
    assert end["reason"] == "complete"
    told = tool_messages(fake, 3)[-1]["content"]
    assert told.startswith("Error: MCPUnavailable: MCP server 'calc' "), told

    async def restarted() -> bool:
        async with httpx.AsyncClient(base_url=stdio_server.base_url) as c:
            (calc,) = (await c.get("/v1/tools")).json()["mcp_servers"]
        return bool(calc["connected"] and calc["restarts"] == 1)

    await until(restarted)
    assert not alive(first_pid)  # the dead child was reaped
    _, end, _ = await ask(stdio_server, {"content": "2+40?", "tools": tools}, sid)
    assert end["reason"] == "complete"
    add, pid = tool_messages(fake, 5)[-2:]
    assert add["content"] == '{"result": 42}'
    second_pid = json.loads(pid["content"])["result"]
    assert second_pid != first_pid

    code = await asyncio.to_thread(stdio_server.terminate)  # SIGTERM: a graceful stop
    assert code in (0, -signal.SIGTERM), stdio_server.output()
    assert not alive(second_pid)  # stopped and reaped with the server


async def test_an_http_mcp_server_gets_its_header_and_the_secret_is_never_shown(
    tmp_path: Path, fake: FakeUpstream, http_mcp: tuple[int, BearerOnly]
) -> None:
    port, guard = http_mcp
    server = await serve(tmp_path, fake, http_config(port), "--log-level", "debug")
    try:
        fake.replies.extend(
            [
                Script(text="", tool_calls=[FakeToolCall("remote__shout", '{"text": "hi"}', "c1")]),
                Script(text="HI it is."),
            ]
        )
        _, end, events = await ask(server, {"content": "shout hi", "tools": ["remote.shout"]})
        async with httpx.AsyncClient(base_url=server.base_url) as c:
            listed = (await c.get("/v1/tools")).json()
            openapi = (await c.get("/openapi.json")).text
    finally:
        await asyncio.to_thread(server.stop)

    assert end["reason"] == "complete"
    assert tool_messages(fake, 1)[0]["content"] == '{"result": "HI"}'
    assert guard.authorized > 0 and guard.refused == 0
    assert [t["name"] for t in listed["tools"]] == [
        "remote.add", "remote.shout", "remote.pid", "remote.fail"
    ]  # fmt: skip
    assert listed["mcp_servers"] == [
        {"name": "remote", "transport": "http", "connected": True, "restarts": 0}
    ]
    for shown in (json.dumps(listed), json.dumps(events.seen), server.output(), openapi):
        assert TOKEN not in shown and KEY not in shown
    assert "mcp server remote: connected" in server.output()


async def test_an_unreachable_mcp_server_leaves_the_server_up_and_the_model_told(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    server = await serve(tmp_path, fake, http_config(find_free_port()))
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as c:
            listed = (await c.get("/v1/tools")).json()
            r = await c.post("/v1/sessions", json={**MODEL, "tools": ["remote.shout"]})
    finally:
        await asyncio.to_thread(server.stop)
    assert listed == {
        "tools": [],
        "mcp_servers": [{"name": "remote", "transport": "http", "connected": False,
                         "restarts": 0}],
    }  # fmt: skip
    assert r.status_code == 400 and "no server tool 'remote.shout'" in r.text
    assert "mcp server remote:" in server.output() and TOKEN not in server.output()


async def test_anthropic_sees_the_same_aliases_in_its_own_format(
    stdio_server: TetherServer, fake: FakeUpstream
) -> None:
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("calc__shout", '{"text": "a"}', "toolu_1")]),
            Script(text="A."),
        ]
    )
    async with httpx.AsyncClient(base_url=stdio_server.base_url, timeout=30) as c:
        session = {"model": "anthropic/claude-sonnet-4-5", "tools": ["calc.shout"]}
        _, run_id, events = await start(c, session, {"content": "shout a"})
        try:
            end = await events.run_end(run_id)
        finally:
            await events.aclose()
    assert end["reason"] == "complete"
    first, second = fake.requests[0].body, fake.requests[1].body
    assert [t["name"] for t in first["tools"]] == ["calc__shout"]
    assert second["messages"][-2]["content"][-1] == {
        "type": "tool_use", "id": "toolu_1", "name": "calc__shout", "input": {"text": "a"}
    }  # fmt: skip
    assert second["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"result": "A"}'}
    ]
    call = next(e for e in events.seen if e["type"] == "part-start" and e.get("tool_call_id"))
    assert call["tool_name"] == "calc.shout"
