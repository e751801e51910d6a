"""A tether app for the durable-run tests, served as ``durable_app:app``.

Its tools write a line to ``$TETHER_TEST_TOOL_LOG`` each time they run, so a
test counts executions across server processes (restarts, replicas).
"""

from __future__ import annotations

import asyncio
import os

import tether
from tether.agents.context import AgentContext

app = tether.App()


def _ran(line: str) -> None:
    with open(os.environ["TETHER_TEST_TOOL_LOG"], "a") as log:
        log.write(line + "\n")


@app.tool(approval=True)
def send_email(to: str) -> str:
    """Send an email (a person approves each call first)."""
    _ran(f"send_email {to}")
    return f"sent to {to}"


@app.tool
def note(n: int) -> str:
    """Write down a number."""
    _ran(f"note {n}")
    return f"noted {n}"


@app.agent("diverging")
async def diverging(ctx: AgentContext) -> None:
    """Not replay-safe on purpose: its model call carries the server's process id."""
    model = ctx.model("openai/gpt-4o-mini")
    reply = await model.respond([{"role": "user", "content": f"pid {os.getpid()}"}])
    outcome = await ctx.tool_call("confirm", {"text": reply.text})
    await ctx.text(f"confirmed: {outcome.output}")


@app.agent("stepper")
async def stepper(ctx: AgentContext) -> None:
    """A side effect through ctx.step: done once, whatever happens to the process."""
    stamp = await ctx.step("stamp", lambda: _stamp(ctx.run_id))
    outcome = await ctx.tool_call("confirm", {"stamp": stamp})
    await ctx.text(f"{stamp} {outcome.output}")


async def _stamp(run_id: str) -> str:
    _ran(f"stamp {run_id}")
    return f"stamp-{os.getpid()}"


@app.agent("fragile", replay=False)
async def fragile(ctx: AgentContext) -> None:
    """Opts out of replay: a run of it whose server dies ends interrupted."""
    for n in range(1, 41):
        await ctx.text(f"{n} " if n < 40 else "40")
        await asyncio.sleep(0.02)
