"""The agent the worker tests serve: words, one journaled step each, a pause between.

``TETHER_TEST_WORDS`` words (default 3), ``TETHER_TEST_DELAY`` seconds each
(default 0). Each word is a ``ctx.step``, so a run continued by another
worker replays the words already written and goes on from there.
"""

from __future__ import annotations

import asyncio
import os

from tether import App
from tether.agents.context import AgentContext
from tether.agents.model import to_chat
from tether.providers.base import ToolCall

app = App()


@app.agent("words")
async def words(ctx: AgentContext) -> None:
    count = int(os.environ.get("TETHER_TEST_WORDS", "3"))
    delay = float(os.environ.get("TETHER_TEST_DELAY", "0"))
    for i in range(count):

        async def word(i: int = i) -> str:
            await asyncio.sleep(delay)
            return f"w{i} "

        await ctx.text(await ctx.step(f"w{i}", word))


@app.tool
def where() -> dict[str, int]:
    """Which process runs this tool."""
    return {"pid": os.getpid()}


@app.agent("tools", tools=["where"])
async def tools(ctx: AgentContext) -> None:
    """A server tool (run where the agent runs), then a client tool that needs approval
    (within ``TETHER_TEST_EXPIRES_IN`` seconds, if set)."""
    part = await ctx.tool_call_start("call_where", "where")
    await ctx.tool_call_end(part, {})
    [ran] = await ctx.run_tools([ToolCall("call_where", "where", "{}")])
    await ctx.text(f"where: {ran.output['pid']}; ")
    expires_in = float(os.environ.get("TETHER_TEST_EXPIRES_IN", "0")) or None
    outcome = await ctx.tool_call(
        "add", {"a": 1, "b": 2}, call_id="call_add", approval=True, expires_in=expires_in
    )
    await ctx.text(f"add: {outcome.output}")


@app.agent("seeing")
async def seeing(ctx: AgentContext) -> None:
    """The session's history, attachments and all, to an OpenAI model; its answer."""
    await ctx.model("openai/gpt-4o-mini").respond(to_chat(ctx.system, ctx.history))
