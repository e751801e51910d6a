"""The agent the workers benchmark serves: a demo-sized answer, streamed at once."""

from __future__ import annotations

from tether import App
from tether.agents.context import AgentContext

app = App()


@app.agent("bench")
async def bench(ctx: AgentContext) -> None:
    for word in ("Hello", " from", " a", " tether", " worker."):
        await ctx.text(word)
