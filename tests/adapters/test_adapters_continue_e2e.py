"""Framework agents continue after a restart without running their tools again.

Real ``tether serve durable_agents:app`` children on one data dir (SQLite), in
front of a local upstream that speaks OpenAI's streaming format and counts the
requests it gets. A Pydantic AI agent and an Agents SDK agent each run a tool
of their own (the framework runs it), then wait on a person and are suspended;
the server is SIGKILLed and started again, the person answers, and the same
run finishes: no model call asked twice, the framework's tool run once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import Events, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from sessions.grammar import violations

HERE = Path(__file__).parent
NOTE = FakeToolCall("note", '{"n": 1}', id="call_note_1")
#: What the person is asked, by kind of wait: the call, and the answer that goes on.
WAITS: dict[str, tuple[FakeToolCall, str, dict[str, Any]]] = {
    "result": (
        FakeToolCall("ask_user", '{"question": "Go on?"}', id="call_ask_1"),
        "tool-results",
        {"output": "yes"},
    ),
    "approval": (
        FakeToolCall("send_email", '{"to": "ada@example.com"}', id="call_send_1"),
        "tool-approvals",
        {"approved": True},
    ),
}


class Servers:
    """``tether serve durable_agents:app`` processes started one after another on one data dir."""

    def __init__(self, tmp: Path, fake: FakeUpstream) -> None:
        self.tmp = tmp
        self.tool_log = tmp / "tools.log"
        self.env = server_env(fake)
        self.env.pop("OPENAI_API_KEY", None)  # the frameworks reach no model but tether's
        self.env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"  # discard: nothing listens
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE), self.env.get("PYTHONPATH")) if p
        )
        self.env["TETHER_TEST_TOOL_LOG"] = str(self.tool_log)
        self.started: list[TetherServer] = []

    async def start(self) -> TetherServer:
        server = TetherServer(
            self.tmp / "data",
            log_path=self.tmp / f"server-{len(self.started)}.log",
            env=self.env,
            extra_args=["durable_agents:app", "--suspend-after", "0.1"],
        )
        self.started.append(server)
        await asyncio.to_thread(server.start)
        return server

    def tool_runs(self) -> list[str]:
        return self.tool_log.read_text().splitlines() if self.tool_log.exists() else []


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, Servers]]:
    async with FakeUpstream() as fake:
        servers = Servers(tmp_path, fake)
        try:
            yield fake, servers
        finally:
            for server in reversed(servers.started):
                await asyncio.to_thread(server.stop)


@pytest.mark.parametrize(
    ("agent", "wait"),
    [("pydantic-notes", "result"), ("pydantic-notes", "approval"), ("sdk-notes", "approval")],
)
async def test_a_framework_agent_continues_after_a_kill_without_running_its_tool_again(
    setup: tuple[FakeUpstream, Servers], agent: str, wait: str
) -> None:
    fake, servers = setup
    asked, route, answer = WAITS[wait]
    fake.replies.extend(
        [
            Script(text="", tool_calls=[NOTE]),
            Script(text="", tool_calls=[asked]),
            Script(text="All done."),
        ]
    )
    first = await servers.start()
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as c:
        sid, run_id, events = await start(c, {"agent": agent}, {"content": "note 1, then ask"})
        try:
            await events.until(lambda e: e["type"] == "run-suspend" and e["run_id"] == run_id)
        finally:
            await events.aclose()
    assert servers.tool_runs() == ["note 1"]
    assert len(fake.requests) == 2
    await asyncio.to_thread(first.kill)

    second = await servers.start()
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as c:
        events = Events(c, sid)
        try:
            r = await c.post(
                f"/v1/sessions/{sid}/{route}", json={"tool_call_id": asked.id, **answer}
            )
            assert r.status_code == 202, r.text
            await events.run_end(run_id)
            snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        finally:
            await events.aclose()
    log = events.seen

    assert violations(log) == []
    assert [(e["run_id"], e["reason"]) for e in log if e["type"] == "run-end"] == [
        (run_id, "complete")
    ], second.output()
    assert [e["run_id"] for e in log if e["type"] == "run-start"] == [run_id]
    (resume,) = [e for e in log if e["type"] == "run-resume"]
    assert resume["run_id"] == run_id and resume["replayed"] == 2
    # The framework's tool ran once; the approved one once, after the restart.
    approved = ["send_email ada@example.com"] if wait == "approval" else []
    assert servers.tool_runs() == ["note 1", *approved]
    # The two model calls made before the kill were not asked again: one more, the last.
    assert len(fake.requests) == 3
    told = fake.requests[2].body["messages"]
    results = {m["tool_call_id"]: m["content"] for m in told if m["role"] == "tool"}
    assert results[NOTE.id] == "noted 1"
    assert results[asked.id] == ("yes" if wait == "result" else "sent to ada@example.com")
    # The answer holds each call once, with its one result, then the last text.
    parts = snapshot["messages"][-1]["parts"]
    assert [(p["kind"], p.get("tool_call_id")) for p in parts] == [
        ("tool-call", NOTE.id),
        ("tool-call", asked.id),
        ("text", None),
    ]
    assert parts[0]["result"] == "noted 1" and parts[2]["text"] == "All done."
    tool_results = [e["tool_call_id"] for e in log if e["type"] == "tool-result"]
    assert sorted(tool_results) == sorted([NOTE.id, asked.id])
    assert snapshot["status"] == "idle" and snapshot["messages"][-1]["status"] == "complete"
