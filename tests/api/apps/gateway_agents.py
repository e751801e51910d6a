"""An app whose agents the gateway's tests reach as ``agent:<name>`` models."""

from __future__ import annotations

import tether
from tether.agents.context import AgentContext

app = tether.App()


@app.agent("shout")
async def shout(ctx: AgentContext) -> None:
    """Answers the last message in capitals, word by word, after its reasoning."""
    await ctx.reasoning("Shouting it back.")
    for word in ctx.history[-1].text.upper().split():
        await ctx.text(word + " ")
