"""The README's agent examples run as written, under ``tether serve module:app``.

Each example is taken from README.md itself, served by a real ``tether serve``
child with no upstream configured (so the offline demo model answers), and
talked to over HTTP.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from helpers.server import TetherServer
from helpers.session_events import Events, start

README = Path(__file__).parents[2] / "README.md"


def readme_example(containing: str) -> str:
    """The README's Python code block that contains ``containing``, dedented."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", README.read_text(), re.S | re.M)
    [code] = [textwrap.dedent(body) for _, body in blocks if containing in body]
    return code


@asynccontextmanager
async def serving(tmp_path: Path, code: str) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "readme_agents.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    async with (
        TetherServer(
            tmp_path / "data", log_path=tmp_path / "log", env=env, extra_args=["readme_agents:app"]
        ) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        yield c


async def ask(
    c: httpx.AsyncClient,
    agent: str,
    content: str,
    on: Callable[[Events, str], Awaitable[None]] | None = None,
) -> dict:
    """The answer of ``agent`` to ``content``; ``on(events, session_id)`` runs meanwhile."""
    sid, run_id, events = await start(c, {"agent": agent}, {"content": content})
    try:
        if on is not None:
            await on(events, sid)
        end = await events.run_end(run_id)
        snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
    finally:
        await events.aclose()
    assert end["reason"] == "complete", end
    return snapshot["messages"][-1]


async def test_the_custom_agent_example_calls_the_servers_model(tmp_path: Path) -> None:
    async with serving(tmp_path, readme_example('@app.agent("shouty")')) as c:
        message = await ask(c, "shouty", "hello there")
    reasoning, text = message["parts"]
    assert reasoning["text"] == "The user wants emphasis."
    assert text["text"].startswith("YOU SAID: HELLO THERE")  # the demo model's answer


async def test_the_pydantic_ai_example_runs_its_tools_through_the_servers_model(
    tmp_path: Path,
) -> None:
    async def approve(events: Events, sid: str) -> None:
        call = await events.until(lambda e: e.get("tool_name") == "delete_file")
        assert call["needs_approval"] is True
        await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
        r = await c.post(
            f"/v1/sessions/{sid}/tool-approvals",
            json={"tool_call_id": call["tool_call_id"], "approved": True},
        )
        assert r.status_code == 202

    async with serving(tmp_path, readme_example("tether.adapters.pydantic_ai")) as c:
        rolled = await ask(c, "helper", "/tool roll_die")
        deleted = await ask(c, "helper", '/tool delete_file {"path": "a.txt"}', approve)

    call, text = rolled["parts"]
    assert call["tool_name"] == "roll_die" and call["result"] == 4
    assert text["text"].startswith("Tool roll_die returned: 4")
    call, text = deleted["parts"]
    assert call["result"] == "a.txt deleted"
    assert text["text"].startswith("Tool delete_file returned: a.txt deleted")
