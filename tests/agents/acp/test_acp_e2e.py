"""ACP agents end to end: a real ``tether serve`` runs ``scripted_agent.py`` (an agent
written with the official ACP SDK) as its child process, declared in a config file.

Over real HTTP: the agent's output arrives as the mapped session events; a reader
that drops mid-run resumes losing nothing; a permission is answered by a second
client; a cancel ends the agent's turn within 500 ms; ``kill -9`` of the agent ends
the run with ``agent_crashed`` and a restarted process answers the next message;
``session/load`` after a server restart; the earlier turns as text without it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import Events
from sessions.grammar import Grammar
from tether.client import AsyncTether

AGENT = Path(__file__).parent / "scripted_agent.py"
SESSION = {"agent": "scripted"}


def config(tmp_path: Path, extra: str = "", *, load: bool = False, media: bool = False) -> Path:
    env = {
        "ACP_TEST_STATE": str(tmp_path / "state.json"),
        "ACP_TEST_MARKS": str(tmp_path / "marks"),
    }
    if load:
        env["ACP_TEST_LOAD"] = "1"
    if media:
        env["ACP_TEST_MEDIA"] = "1"
    table = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    path = tmp_path / "tether.toml"
    path.write_text(
        f"""
[[agents]]
name = "scripted"
kind = "acp"
command = "{sys.executable}"
args = ["{AGENT}"]
env = {{ {table} }}
restart_initial = 0.1
{extra}
"""
    )
    return path


def server_for(
    tmp_path: Path,
    *,
    load: bool = False,
    media: bool = False,
    log: str = "server.log",
    extra: str = "",
) -> TetherServer:
    env = {
        **os.environ,
        "TETHER_CONFIG": str(config(tmp_path, extra, load=load, media=media)),
        "SERVER_ONLY_SECRET": "s3cr3t-of-the-server",
    }
    return TetherServer(
        tmp_path / "data", log_path=tmp_path / log, env=env,
        extra_args=["--log-level", "debug", "--attachment-inline-max", "64"],
    )  # fmt: skip


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TetherServer]:
    srv = server_for(tmp_path)
    await asyncio.to_thread(srv.start)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


async def send(c: httpx.AsyncClient, sid: str, text: str) -> str:
    r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": text})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def new_session(c: httpx.AsyncClient) -> tuple[str, Events]:
    r = await c.post("/v1/sessions", json=SESSION)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    return sid, Events(c, sid)


def of_run(events: Events, run_id: str) -> list[dict[str, Any]]:
    return [e for e in events.seen if e.get("run_id") == run_id]


def text_of(events: list[dict[str, Any]], kind: str = "text") -> str:
    parts = {e["part_id"] for e in events if e["type"] == "part-start" and e["kind"] == kind}
    return "".join(
        e["delta"] for e in events if e["type"] == "part-delta" and e["part_id"] in parts
    )


async def test_output_arrives_as_session_events(server: TetherServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        models = (await c.get("/v1/models")).json()
        assert "agent:scripted" in [m["id"] for m in models["data"]]
        sid, events = await new_session(c)

        run = await send(c, sid, "think")
        assert (await events.run_end(run))["reason"] == "complete"
        assert text_of(of_run(events, run), "reasoning") == "pondering"
        assert text_of(of_run(events, run)) == "thought about it"

        run = await send(c, sid, "tool")
        assert (await events.run_end(run))["reason"] == "complete"
        seen = of_run(events, run)
        start = next(e for e in seen if e["type"] == "part-start" and e["kind"] == "tool-call")
        assert start["tool_name"] == "Read notes"
        call_id = start["tool_call_id"]
        end = next(e for e in seen if e["type"] == "part-end" and e["part_id"] == start["part_id"])
        assert end["value"] == {"path": "notes.txt"}  # in progress, with the input it gave
        result = next(e for e in seen if e["type"] == "tool-result")
        assert seen.index(start) < seen.index(end) < seen.index(result)
        assert result["tool_call_id"] == call_id and result["run_id"] == run
        assert result["output"] == {
            "content": [{"type": "content", "content": {"type": "text", "text": "the notes"}}],
            "raw_output": {"bytes": 9},
        }
        assert text_of(seen) == "done with the tool"

        run = await send(c, sid, "tool-fail")
        await events.run_end(run)
        failed = next(e for e in of_run(events, run) if e["type"] == "tool-result")
        assert failed["error"] == "no such file" and "output" not in failed

        run = await send(c, sid, "plan")
        await events.run_end(run)
        plan = [e for e in of_run(events, run) if e["type"] == "part-start" and e["kind"] == "plan"]
        assert len(plan) == 1
        plan_end = next(e for e in of_run(events, run) if e.get("part_id") == plan[0]["part_id"]
                        and e["type"] == "part-end")  # fmt: skip
        assert [p["content"] for p in plan_end["value"]] == ["look", "fix"]
        assert plan_end["value"][1]["status"] == "in_progress"

        run = await send(c, sid, "usage")
        await events.run_end(run)
        end = next(e for e in of_run(events, run) if e["type"] == "message-end")
        assert end["usage"] == {"context_tokens": 120, "context_window": 1000}

        # The process gets the table's env and a few basics, not the server's secrets.
        state = str(server.data_dir.parent / "state.json")
        environment = {
            "SERVER_ONLY_SECRET": "unset",
            "ACP_TEST_LOAD": "unset",
            "ACP_TEST_STATE": state,
        }
        for name, value in environment.items():
            run = await send(c, sid, f"env {name}")
            await events.run_end(run)
            assert text_of(of_run(events, run)) == value

        run = await send(c, sid, "max")
        assert (await events.run_end(run))["reason"] == "complete"
        end = next(e for e in of_run(events, run) if e["type"] == "message-end")
        assert end["stop_reason"] == "max_tokens"
        await events.aclose()
        assert Grammar().check(events.seen) == []

        snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        kinds = [p["kind"] for m in snapshot["messages"] for p in m["parts"]]
        assert "plan" in kinds and "tool-call" in kinds

        # The OpenAI-compatible front reaches the same agent.
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "agent:scripted", "messages": [{"role": "user", "content": "hello"}]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: hello"


async def test_permission_is_answered_by_another_client(server: TetherServer) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as other,
    ):
        sid, events = await new_session(c)
        run = await send(c, sid, "permission")
        ask = await events.until(lambda e: e["type"] == "part-start" and e.get("needs_approval"))
        assert ask["tool_name"] == "Delete build/"
        asked = await events.until(
            lambda e: e["type"] == "part-end" and e["part_id"] == ask["part_id"]
        )
        assert [o["option_id"] for o in asked["value"]["options"]] == ["yes", "no"]
        # The second client sees the question in the snapshot and picks an option.
        snapshot = (await other.get(f"/v1/sessions/{sid}")).json()
        assert snapshot["status"] == "paused"
        async with AsyncTether(server.base_url) as sdk:  # the SDK names the option
            await sdk.tool_approval(sid, ask["tool_call_id"], False, option_id="no")
        assert (await events.run_end(run))["reason"] == "complete"
        assert text_of(of_run(events, run)) == "permission: no"
        again = await other.post(
            f"/v1/sessions/{sid}/tool-approvals",
            json={"tool_call_id": ask["tool_call_id"], "approved": True},
        )
        assert again.status_code == 409

        run = await send(c, sid, "permission")  # a plain approve picks the allowing option
        ask = await events.until(lambda e: e["type"] == "part-start" and e.get("needs_approval")
                                 and e["run_id"] == run)  # fmt: skip
        r = await other.post(
            f"/v1/sessions/{sid}/tool-approvals",
            json={"tool_call_id": ask["tool_call_id"], "approved": True},
        )
        assert r.status_code == 202, r.text
        await events.run_end(run)
        assert text_of(of_run(events, run)) == "permission: yes"
        await events.aclose()
        assert Grammar().check(events.seen) == []


async def test_cancel_ends_the_agents_turn_within_500_ms(
    server: TetherServer, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, events = await new_session(c)
        run = await send(c, sid, "slow")
        await events.until(lambda e: e["type"] == "part-delta" and e["delta"] == ".")
        began = time.monotonic()
        r = await c.post(f"/v1/sessions/{sid}/cancel", json={})
        assert r.status_code in (200, 202), r.text
        end = await events.run_end(run)
        took = time.monotonic() - began
        assert end["reason"] == "cancelled"
        assert took < 0.5, f"cancel took {took:.3f} s"
        # The agent saw session/cancel and ended its turn before the run ended.
        assert (tmp_path / "marks").read_text().startswith("cancelled")
        # A permission pending at the cancel is answered "cancelled".
        run = await send(c, sid, "permission")
        await events.until(lambda e: e["type"] == "part-start" and e.get("needs_approval")
                           and e["run_id"] == run)  # fmt: skip
        await c.post(f"/v1/sessions/{sid}/cancel", json={})
        assert (await events.run_end(run))["reason"] == "cancelled"
        run = await send(c, sid, "hello")
        assert (await events.run_end(run))["reason"] == "complete"
        await events.aclose()
        assert Grammar().check(events.seen) == []


async def test_a_reader_that_drops_resumes_with_nothing_lost(server: TetherServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, events = await new_session(c)
        run = await send(c, sid, "slow")
        first: list[dict[str, Any]] = []
        offset = "-1"
        async with c.stream("GET", f"/v1/sessions/{sid}/events?offset=-1") as r:
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    offset = line[4:]
                elif line.startswith("data: "):
                    first.append(json.loads(line[6:]))
                    if sum(e["type"] == "part-delta" for e in first) >= 5:
                        break  # the reader drops mid-run
        await events.until(lambda e: sum(x["type"] == "part-delta" for x in events.seen) >= 15)
        await c.post(f"/v1/sessions/{sid}/cancel", json={})
        rest: list[dict[str, Any]] = []
        async with c.stream("GET", f"/v1/sessions/{sid}/events?offset={offset}") as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    rest.append(json.loads(line[6:]))
                    if rest[-1]["type"] == "run-end" and rest[-1]["run_id"] == run:
                        break
        await events.run_end(run)
        await events.aclose()
        whole = events.seen[: events.seen.index(rest[-1]) + 1]
        assert [e["id"] for e in first + rest] == [e["id"] for e in whole]


def is_pid(e: dict[str, Any]) -> bool:
    return e["type"] == "part-delta" and e["delta"].startswith("pid ")


def log_states(server: TetherServer) -> list[str]:
    found = re.findall(r"acp agent scripted: (\w+) -> (\w+)", server.output())
    return [found[0][0], *(new for _, new in found)] if found else []


async def test_kill_9_ends_the_run_and_a_restarted_process_answers(server: TetherServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, events = await new_session(c)
        run = await send(c, sid, "slow")
        said = await events.until(
            lambda e: e["type"] == "part-delta" and e["delta"].startswith("pid ")
        )
        pid = int(said["delta"].split()[1])
        os.kill(pid, signal.SIGKILL)
        end = await events.run_end(run)
        assert end["reason"] == "error"
        error = next(e for e in of_run(events, run) if e["type"] == "error")
        assert error["code"] == "agent_crashed"
        assert (
            error["message"]
            == f"agent 'scripted' exited with status {-signal.SIGKILL} during the run"
        )

        # A process that dies while a permission is asked: the wait ends with the run.
        run = await send(c, sid, "permission")
        await events.until(lambda e: e.get("run_id") == run and e.get("needs_approval"))
        pids = re.findall(r"scripted agent (\d+) initializing", server.output())
        os.kill(int(pids[-1]), signal.SIGKILL)
        assert (await events.run_end(run))["reason"] == "error"
        assert Grammar().check(events.seen) == []

        run = await send(c, sid, "slow")
        said = await events.until(lambda e: e.get("run_id") == run and is_pid(e))
        assert int(said["delta"].split()[1]) != pid  # a new process
        await c.post(f"/v1/sessions/{sid}/cancel", json={})
        await events.run_end(run)
        assert Grammar().check(events.seen) == []
        ready = (await c.get("/readyz")).json()
        assert ready["agents"] == {"scripted": {"state": "ready"}}
        metrics = (await c.get("/metrics")).text
        assert 'tether_acp_agent_state{agent="scripted",state="ready"} 1.0' in metrics
        await events.aclose()
    states = ["stopped", "starting", "ready", "reconnecting", "ready", "reconnecting", "ready"]
    assert log_states(server) == states
    assert f"scripted agent {pid} initializing" in server.output()  # stderr, mirrored
    await asyncio.to_thread(server.stop)
    assert log_states(server)[-1] == "closed"


async def test_session_load_after_a_server_restart(tmp_path: Path) -> None:
    server = server_for(tmp_path, load=True)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            sid, events = await new_session(c)
            await events.run_end(await send(c, sid, "first"))
            await events.aclose()
        await asyncio.to_thread(server.stop)
        server = server_for(tmp_path, load=True, log="restarted.log")
        await asyncio.to_thread(server.start)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            before = (await c.get(f"/v1/sessions/{sid}")).json()["messages"]
            events = Events(c, sid)
            run = await send(c, sid, "prompt")
            await events.run_end(run)
            # The load's replay (the first turn) was not appended again; the
            # agent had its own history, so the prompt is the message alone.
            assert text_of(of_run(events, run)) == "1 blocks; first: prompt"
            after = (await c.get(f"/v1/sessions/{sid}")).json()["messages"]
            assert [m["id"] for m in after[: len(before)]] == [m["id"] for m in before]
            assert len(after) == len(before) + 2
            await events.aclose()
            assert Grammar().check(events.seen) == []
        assert "loaded session sess_" in server.output()
    finally:
        await asyncio.to_thread(server.stop)


async def test_without_load_a_new_acp_session_is_given_the_history(
    server: TetherServer, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, events = await new_session(c)
        await events.run_end(await send(c, sid, "first"))
        await events.aclose()
    await asyncio.to_thread(server.stop)
    restarted = server_for(tmp_path, log="restarted.log")  # the same data dir
    await asyncio.to_thread(restarted.start)
    try:
        async with httpx.AsyncClient(base_url=restarted.base_url, timeout=30) as c:
            events = Events(c, sid)
            run = await send(c, sid, "prompt")
            await events.run_end(run)
            await events.aclose()
    finally:
        await asyncio.to_thread(restarted.stop)
    assert text_of(of_run(events, run)) == (
        "2 blocks; first: The conversation so far (for context; answer the message after it):\n"
        "user: first\nassistant: echo: first"
    )


async def test_the_workspace_serves_files_and_terminals_inside_it(
    server: TetherServer, tmp_path: Path
) -> None:
    """fs/* and terminal/* inside the session's workspace; a path outside it, refused
    (tether.agents.acp.workspace serves them)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        sid, events = await new_session(c)
        await events.run_end(await send(c, sid, "hello"))  # the workspace exists from here
        workspace = (tmp_path / "data" / "workspaces" / "scripted" / sid).resolve()
        (workspace / "notes.txt").write_text("remember the milk")
        (tmp_path / "secret.txt").write_text("not for agents")

        async def answer(text: str) -> str:
            run = await send(c, sid, text)
            await events.run_end(run)
            return text_of(of_run(events, run))

        assert await answer(f"read {workspace / 'notes.txt'}") == "file: remember the milk"
        refused = await answer(f"read {tmp_path / 'secret.txt'}")
        assert refused.startswith("refused:") and "not for agents" not in refused
        assert await answer(f"write {workspace / 'out' / 'a.txt'} hi there") == "written"
        assert (workspace / "out" / "a.txt").read_text() == "hi there"
        assert (await answer(f"write {tmp_path / 'b.txt'} no")).startswith("refused:")
        assert not (tmp_path / "b.txt").exists()
        assert await answer("run pwd") == f"exit 0: {workspace}"  # runs in the workspace
        await events.aclose()


async def test_fs_and_terminal_may_be_refused_as_a_whole(tmp_path: Path) -> None:
    server = server_for(tmp_path, extra="fs = false\nterminal = false")
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            sid, events = await new_session(c)
            await events.run_end(await send(c, sid, "hello"))
            workspace = (tmp_path / "data" / "workspaces" / "scripted" / sid).resolve()
            (workspace / "notes.txt").write_text("remember the milk")
            for text in (f"read {workspace / 'notes.txt'}", "run pwd"):
                run = await send(c, sid, text)
                await events.run_end(run)
                assert text_of(of_run(events, run)).startswith("refused:"), text
            await events.aclose()
    finally:
        await asyncio.to_thread(server.stop)


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()  # 32 bytes: inline
PDF = base64.b64encode(b"%PDF-1.4\n" + bytes(200)).decode()  # 209 bytes: a stream of its own
WITH_MEDIA = [
    {"type": "text", "text": "blocks"},
    {"type": "image", "media_type": "image/png", "data": PNG},
    {"type": "file", "media_type": "application/pdf", "name": "doc.pdf", "data": PDF},
]


@pytest.mark.parametrize("media", [True, False])
async def test_images_and_files_reach_an_agent_that_takes_them(tmp_path: Path, media: bool) -> None:
    server = server_for(tmp_path, media=media)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            sid, events = await new_session(c)
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": WITH_MEDIA})
            assert r.status_code == 202, r.text
            run = r.json()["run_id"]
            await events.run_end(run)
            await events.aclose()
            said = text_of(of_run(events, run))
        if media:  # the PDF's bytes were read from their attachment stream
            assert said == "text|blocks,image(image/png,32),resource(application/pdf,209)"
        else:
            assert said == (
                "text|blocks,"
                "text|[image image (image/png): not sent, the agent takes none],"
                "text|[file doc.pdf (application/pdf): not sent, the agent takes none]"
            )
    finally:
        await asyncio.to_thread(server.stop)
