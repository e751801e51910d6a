"""Agents for the web UI tests, served with ``tether serve web.agents:app``."""

from __future__ import annotations

import asyncio

from tether.agents.app import App
from tether.agents.context import AgentContext
from tether.agents.model import ModelAgent
from tether.runtime.client_requests import ClientRequestError
from tether.runtime.context import RunContext

app = App()


@app.agent("approver")
async def approver(ctx: RunContext) -> None:
    """Asks to run ``delete_file``, which needs the user's approval, then its result."""
    outcome = await ctx.tool_call("delete_file", {"path": "/tmp/report.txt"}, approval=True)
    if outcome.ok:
        await ctx.text(f"Deleted: {outcome.output}")
    else:
        await ctx.text(f"Not deleted ({outcome.error})")


@app.agent("flaky")
async def flaky(ctx: RunContext) -> None:
    """Fails mid-answer as a model stream can, and retries: the draft is discarded."""
    await ctx.text("A draft that ")
    await ctx.text("breaks off")
    await ctx.retry(1, 0.01, "upstream: connection reset")
    ctx.new_attempt()
    await ctx.text("The answer.")


@app.agent("brief")
async def brief(ctx: AgentContext) -> None:
    """The built-in model agent on the demo model, with a context budget that one
    short turn fills: from the second turn on, it sends the model only the
    latest (a context-trim)."""
    await ModelAgent(ctx.kit, context_tokens=15)(ctx)


@app.agent("fragile", replay=False)
async def fragile(ctx: RunContext) -> None:
    """Opts out of replay: a run of it whose server dies ends interrupted."""
    for n in range(1, 21):
        await ctx.text(f"{n} " if n < 20 else "20")
        await asyncio.sleep(0.05)


@app.agent("asker")
async def asker(ctx: RunContext) -> None:
    """Asks its client to confirm (the client channel), then says what it was told."""
    try:
        answer = await ctx.request_client("confirm", {"message": "Delete the report?"})
    except ClientRequestError as err:
        await ctx.text(f"No answer: {err.message} ({err.code})")
        return
    await ctx.text("Deleted." if answer.get("confirmed") else "Kept.")


@app.agent("hasty")
async def hasty(ctx: RunContext) -> None:
    """Asks its client to confirm, but waits only half a second for the answer."""
    try:
        await ctx.request_client("confirm", {"message": "Quick: go on?"}, timeout=0.5)
    except ClientRequestError as err:
        await ctx.text(f"No answer: {err.message} ({err.code})")
        return
    await ctx.text("Answered in time.")
