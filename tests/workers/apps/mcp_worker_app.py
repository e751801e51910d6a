"""An agent that uses an MCP server's tools: served by a worker with a ``TETHER_CONFIG``
whose ``[[mcp_servers]]`` is the calculator of tests/agents/apps/mcp_calc.py, named ``calc``."""

from __future__ import annotations

import orjson

from tether import App
from tether.agents.context import AgentContext
from tether.providers.base import ToolCall

app = App()


@app.agent("calc", tools=["calc.add", "calc.pid"])
async def calc(ctx: AgentContext) -> None:
    """Adds 2 and 3 with the MCP server's ``add``, and says which process ran it."""
    calls = [ToolCall("call_add", "calc.add", orjson.dumps({"a": 2, "b": 3}).decode())]
    calls.append(ToolCall("call_pid", "calc.pid", "{}"))
    for call in calls:
        part = await ctx.tool_call_start(call.id, call.name)
        await ctx.tool_call_end(part, orjson.loads(call.arguments))
    added, ran_in = await ctx.run_tools(calls)
    await ctx.text(f"sum: {added.output}; pid: {ran_in.output}")
