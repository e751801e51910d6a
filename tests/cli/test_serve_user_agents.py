"""`tether serve module:app` serves user-written agents written with tether.App."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import httpx

from api.sse import events
from helpers.server import TetherServer

AGENT_MODULE = textwrap.dedent(
    """
    import tether

    app = tether.App()

    @app.agent("shouty")
    async def shouty(ctx):
        said = ctx.history[-1].text
        await ctx.reasoning("The user wants emphasis.")
        found = await ctx.tool_call("lookup", {"q": said}, approval=True)
        await ctx.text(f"{said.upper()}! lookup: {found.output or found.error}")
    """
)


def test_a_user_agent_streams_reasoning_asks_approval_and_uses_a_tool(tmp_path: Path) -> None:
    (tmp_path / "my_agents.py").write_text(AGENT_MODULE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    app_server = TetherServer(
        tmp_path / "data", log_path=tmp_path / "log", env=env, extra_args=["my_agents:app"]
    )
    with app_server, httpx.Client(base_url=app_server.base_url, timeout=20) as c:
        assert "agent:shouty" in [m["id"] for m in c.get("/v1/models").json()["data"]]
        sid = c.post("/v1/sessions", json={"agent": "shouty"}).json()["id"]
        run = c.post(f"/v1/sessions/{sid}/messages", json={"content": "hello"}).json()
        seen = []
        for _, e in events(c, f"/v1/sessions/{sid}/events", until_run_end=run["run_id"]):
            seen.append(e)
            if e["type"] == "part-start" and e["kind"] == "tool-call":
                assert e["needs_approval"] is True
                call = e["tool_call_id"]
                assert (
                    c.post(
                        f"/v1/sessions/{sid}/tool-approvals",
                        json={"tool_call_id": call, "approved": True},
                    ).status_code
                    == 202
                )
                assert (
                    c.post(
                        f"/v1/sessions/{sid}/tool-results",
                        json={"tool_call_id": call, "output": "3 hits"},
                    ).status_code
                    == 202
                )
        final = c.get(f"/v1/sessions/{sid}").json()["messages"][-1]
    kinds = [p["kind"] for p in final["parts"]]
    assert kinds == ["reasoning", "tool-call", "text"]
    assert final["parts"][2]["text"] == "HELLO! lookup: 3 hits"
    assert final["parts"][1]["approval"]["approved"] is True
    assert [e["reason"] for e in seen if e["type"] == "run-end"] == ["complete"]
