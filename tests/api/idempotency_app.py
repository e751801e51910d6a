"""An agent for the idempotency tests: a tool call that waits for a person's approval."""

from __future__ import annotations

import tether

app = tether.App()


@app.agent("approve")
async def approve(ctx: tether.AgentContext) -> None:
    """Asks to approve a call, then says what came of it."""
    out = await ctx.tool_call("remove", {"path": "/tmp/x"}, approval=True)
    await ctx.text(f"removed={out.output}" if out.ok else f"refused={out.error}")
