"""Agents for the runtime benchmark: paced tokens that carry their birth time; a tool loop.

Each token of ``ticker`` is the wall-clock nanosecond at which the agent yields
it, so a reader on the same machine measures the runtime's whole cost (event
append, fan-out, SSE encoding, HTTP) from yield to receipt.

``tool_loop`` is the model agent's loop with its tool run in the server: each
call the model makes is answered at once, recorded as a server tool's outcome
is. It stands in for a server tool (``@app.tool``) until apps can register one.
"""

from __future__ import annotations

import asyncio
import time

from tether import App
from tether.agents.context import AgentContext
from tether.providers.base import ChatMessage
from tether.runtime.context import RunContext, ToolOutcome

app = App()


@app.agent("ticker")
async def ticker(ctx: RunContext) -> None:
    words = ctx.history[-1].text().split()
    count, per_second = int(words[0]), float(words[1])
    interval = 1.0 / per_second
    next_at = time.monotonic()
    for _ in range(count):
        await ctx.text(f"{time.time_ns()} ")
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


@app.agent("tool_loop")
async def tool_loop(ctx: AgentContext) -> None:
    model = ctx.model("openai/bench-model")  # benchmarks/upstream.py's, through the server
    messages = [ChatMessage("user", ctx.history[-1].text())]
    while True:
        reply = await model.respond(messages, tools=ctx.tools)
        if not reply.tool_calls:
            return
        messages.append(ChatMessage("assistant", reply.text, reply.tool_calls))
        for call in reply.tool_calls:
            await ctx.tool_result(call.id, ToolOutcome(output="ok"))
            messages.append(ChatMessage("tool", "ok", tool_call_id=call.id))
