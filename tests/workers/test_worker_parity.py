"""The same agent code in a tether worker or a webhook handler as in the server: attachments,
MCP tools, and whose sessions a worker key may take.

Real processes: ``tether serve`` and ``tether worker`` children (or tether's webhook
handler in a uvicorn child), the fake OpenAI upstream (tests/providers/fake_upstreams.py)
in the test's loop, and the calculator MCP server of tests/agents/apps/mcp_calc.py run
over stdio by the worker or the handler.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.session_events import Events, server_env
from providers.fake_upstreams import FakeUpstream
from tether.api.workers import worker_identity
from tether.runtime.dispatch import wake_stream, work_stream
from workers.test_webhook_mode import _env, hooked
from workers.test_workers import answer_text, new_session, stream_events
from workers.worker_cluster import OTHER_WORKER_KEY, WORKER_KEY, cluster_of


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: Attachments larger than this go to streams of their own.
INLINE_MAX = 1024
#: A file over the inline limit: stored in an attachment stream.
BIG = b"%PDF-1.4\n" + bytes(range(256)) * 16 + b"\n%%EOF\n"
#: How the OpenAI upstream is sent BIG.
SENT_FILE = {
    "type": "file",
    "file": {"file_data": f"data:application/pdf;base64,{b64(BIG)}", "filename": "big.pdf"},
}
MCP_CALC = Path(__file__).parent.parent / "agents" / "apps" / "mcp_calc.py"


async def worker_call(
    c: httpx.AsyncClient, key: str, op: str, body: dict[str, Any]
) -> httpx.Response:
    return await c.post(f"/v1/worker/{op}", json=body, headers={"authorization": f"Bearer {key}"})


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


def openai_env(fake: FakeUpstream) -> dict[str, str]:
    """The fake upstream as the OpenAI provider (with the variables that point at it)."""
    return {k: v for k, v in server_env(fake).items() if k.startswith("TETHER_")}


async def send_file(c: httpx.AsyncClient, session_id: str) -> str:
    content = [
        {"type": "file", "data": f"data:application/pdf;base64,{b64(BIG)}", "name": "big.pdf"},
        {"type": "text", "text": "What is in it?"},
    ]
    r = await c.post(f"/v1/sessions/{session_id}/messages", json={"content": content})
    assert r.status_code == 202, r.text
    run_id: str = r.json()["run_id"]
    return run_id


async def attachment_stream(c: httpx.AsyncClient, session_id: str) -> str:
    """The name of the stream the session's first message's file was moved to (its
    ``submit``, before a run places it)."""
    for e in await stream_events(c, session_id):
        if e["type"] in ("submit", "user-message"):
            name: str = e["parts"][0]["stream"]
            return name
    raise AssertionError("no message")


async def ask_calc(c: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """Ask the agent ``calc`` once, in a new session: (its ``run-end``, the answer's text)."""
    session_id = await new_session(c, {"agent": "calc"})
    events = Events(c, session_id)
    r = await c.post(f"/v1/sessions/{session_id}/messages", json={"content": "go"})
    run_id = r.json()["run_id"]
    end = await events.run_end(run_id)
    await events.aclose()
    return end, answer_text(await stream_events(c, session_id), run_id)


async def test_a_worker_run_sends_a_stream_stored_attachments_bytes_to_the_model(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """An attachment too large to stay in its event reaches the upstream whole from a
    worker, as it does from the server: the worker reads it through the worker API."""
    async with cluster_of(tmp_path) as cluster:
        cluster.env.update(openai_env(fake))
        await cluster.start_server("--attachment-inline-max", str(INLINE_MAX), agents="seeing")
        await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c, {"agent": "seeing"})
            events = Events(c, session_id)
            run_id = await send_file(c, session_id)
            end = await events.run_end(run_id)
            await events.aclose()
            assert "/attachments/" in await attachment_stream(c, session_id)
        assert end["reason"] == "complete", cluster.logs()
        sent = fake.requests[-1].body["messages"][-1]
        assert sent["content"][0] == SENT_FILE


async def test_a_worker_reads_only_the_attachments_of_the_sessions_it_holds(
    tmp_path: Path,
) -> None:
    """An attachment stream is read by the worker key that holds its session's lease, and
    by nobody else: another session's holder, another key, or a path that is not an
    attachment stream all get 404."""
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server("--attachment-inline-max", str(INLINE_MAX), agents="seeing")
        async with cluster.client() as c:
            mine = await new_session(c, {"agent": "seeing"})
            other = await new_session(c, {"agent": "seeing"})
            await send_file(c, mine)  # no worker runs: the runs wait, nobody holds a lease
            await send_file(c, other)
            path = await attachment_stream(c, mine)
            owner = worker_identity(WORKER_KEY) + "/test"

            async def read(key: str, body: dict[str, Any]) -> httpx.Response:
                return await worker_call(c, key, "attachment", body)

            assert (await read(WORKER_KEY, {"path": path})).status_code == 404
            held = {"name": f"session:{other}", "owner": owner, "ttl": 30}
            assert (await worker_call(c, WORKER_KEY, "lease_acquire", held)).json()["acquired"]
            assert (await read(WORKER_KEY, {"path": path})).status_code == 404
            # Holding its session, the key reads it, whole; another key still cannot.
            held = {"name": f"session:{mine}", "owner": owner, "ttl": 30}
            assert (await worker_call(c, WORKER_KEY, "lease_acquire", held)).json()["acquired"]
            r = await read(WORKER_KEY, {"path": path})
            assert r.status_code == 200, r.text
            assert base64.b64decode(r.json()["data"]) == BIG
            assert (await read(OTHER_WORKER_KEY, {"path": path})).status_code == 404
            # Only attachment streams, named under the held session.
            other_path = await attachment_stream(c, other)
            for bad in (
                f"sessions/{mine}", f"sessions/{mine}/attachments/att_nope",
                other_path.replace(other, mine, 1).replace("/attachments/", "/x/"),
                f"sessions/{mine}/attachments/{other_path.rpartition('/')[2]}/../..",
                "~keys/anything", 7,
            ):  # fmt: skip
                r = await read(WORKER_KEY, {"path": bad})
                assert r.status_code == 404, (bad, r.text)
        assert WORKER_KEY not in cluster.logs()


async def test_an_attachment_over_the_servers_body_limit_is_not_read(tmp_path: Path) -> None:
    """The read is bounded by the server's ``--max-body``: an attachment stored under a larger
    limit is refused 413 once the server runs with a smaller one, and nothing is sent."""
    async with cluster_of(tmp_path) as cluster:
        args = ("--attachment-inline-max", str(INLINE_MAX))
        await cluster.start_server(*args, agents="seeing")
        async with cluster.client() as c:
            session_id = await new_session(c, {"agent": "seeing"})
            await send_file(c, session_id)
            path = await attachment_stream(c, session_id)
        assert cluster.server is not None
        await asyncio.to_thread(cluster.server.stop)
        await cluster.start_server(*args, "--max-body", str(len(BIG) // 2), agents="seeing")
        async with cluster.client() as c:
            owner = worker_identity(WORKER_KEY) + "/test"
            held = {"name": f"session:{session_id}", "owner": owner, "ttl": 30}
            assert (await worker_call(c, WORKER_KEY, "lease_acquire", held)).json()["acquired"]
            r = await worker_call(c, WORKER_KEY, "attachment", {"path": path})
            assert r.status_code == 413, r.text
            assert "data" not in r.json()


def mcp_config(tmp_path: Path) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(
        f'[[mcp_servers]]\nname = "calc"\ncommand = "{sys.executable}"\nargs = ["{MCP_CALC}"]\n'
    )
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_worker_runs_the_configs_mcp_servers_and_its_agents_call_their_tools(
    tmp_path: Path,
) -> None:
    """A worker given ``TETHER_CONFIG`` runs its ``[[mcp_servers]]`` itself, as children
    it stops at exit; the agent's ``calc.*`` tools are called there."""
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server(agents="calc")
        cluster.env["TETHER_CONFIG"] = str(mcp_config(tmp_path))  # the worker's, not the server's
        worker = await cluster.start_worker(app="mcp_worker_app:app")
        async with cluster.client() as c:
            end, text = await ask_calc(c)
        assert end["reason"] == "complete", cluster.logs()
        match = re.fullmatch(r"sum: \D*5\D*; pid: \D*(\d+)\D*", text)
        assert match is not None, text
        mcp_pid = int(match.group(1))
        status = await asyncio.to_thread(Path(f"/proc/{mcp_pid}/status").read_text)
        assert f"PPid:\t{worker.pid}\n" in status  # the worker's own child
        await asyncio.to_thread(worker.stop)
        assert not alive(mcp_pid)  # stopped (and reaped) with the worker


async def test_a_worker_refuses_to_start_when_an_agent_names_a_tool_nobody_has(
    tmp_path: Path,
) -> None:
    """As ``tether serve`` does: an agent's ``calc.add`` with no MCP server ``calc`` configured
    is an error at start, not a run that waits forever for a tool."""
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server(agents="calc")
        worker = cluster.new_worker(app="mcp_worker_app:app").spawn()
        assert worker.process is not None
        assert await asyncio.to_thread(worker.process.wait, 30) != 0
        assert "no tool 'calc.add'" in worker.output()


async def test_a_webhook_agents_sessions_are_not_for_worker_keys(tmp_path: Path) -> None:
    """Only a webhook wake's callback token takes a webhook agent's session: a worker key
    gets 404 for its lease and for its work and wake streams."""
    async with cluster_of(tmp_path) as cluster:
        cluster.env["TETHER_WEBHOOK_AGENTS"] = "hooked=http://127.0.0.1:9/hook"
        await cluster.start_server("--webhook-allow-loopback", agents="words")
        async with cluster.client() as c:
            session_id = await new_session(c, {"agent": "hooked"})
            r = await c.post(f"/v1/sessions/{session_id}/messages", json={"content": "go"})
            assert r.status_code == 202, r.text
            owner = worker_identity(WORKER_KEY) + "/test"
            body = {"name": f"session:{session_id}", "owner": owner, "ttl": 30}
            r = await worker_call(c, WORKER_KEY, "lease_acquire", body)
            assert r.status_code == 404, r.text
            for stream in (work_stream("hooked"), wake_stream("hooked")):
                body = {"path": stream, "offset": 0}
                r = await worker_call(c, WORKER_KEY, "read", body)
                assert r.status_code == 404, r.text
            # A worker-served agent's work stream stays readable (the check is not blanket).
            body = {"path": work_stream("words"), "offset": 0}
            r = await worker_call(c, WORKER_KEY, "read", body)
            assert r.status_code == 200, r.text


async def test_a_webhook_run_sends_a_stream_stored_attachments_bytes_to_the_model(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """The webhook handler reads a stored attachment with its wake's callback token."""
    env = {**_env(), **openai_env(fake)}
    args = ("--attachment-inline-max", str(INLINE_MAX))
    async with (
        hooked(tmp_path, "seeing", "worker_app:app", env, *args) as (server, handler),
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        session_id = await new_session(c, {"agent": "seeing"})
        events = Events(c, session_id)
        run_id = await send_file(c, session_id)
        end = await events.run_end(run_id)
        await events.aclose()
        assert end["reason"] == "complete", server.output() + handler.output()
    assert fake.requests[-1].body["messages"][-1]["content"][0] == SENT_FILE


async def test_a_webhook_handler_runs_the_configs_mcp_servers_for_its_lifetime(
    tmp_path: Path,
) -> None:
    """The handler connects the ``[[mcp_servers]]`` of its ``TETHER_CONFIG`` at start (its
    lifespan), its agents call their tools, and it stops them when it stops."""
    config = str(mcp_config(tmp_path))
    async with hooked(tmp_path, "calc", "mcp_worker_app:app", _env(), TETHER_CONFIG=config) as (
        server,
        handler,
    ):
        assert handler.process is not None
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            end, text = await ask_calc(c)
        assert end["reason"] == "complete", server.output() + handler.output()
        match = re.fullmatch(r"sum: \D*5\D*; pid: \D*(\d+)\D*", text)
        assert match is not None, text
        mcp_pid = int(match.group(1))
        status = await asyncio.to_thread(Path(f"/proc/{mcp_pid}/status").read_text)
        assert f"PPid:\t{handler.process.pid}\n" in status
        await asyncio.to_thread(handler.stop)
        assert not alive(mcp_pid)
