"""Custom agents that call the server's models, for ``test_server_models_e2e.py``.

No provider key and no model client here: ``ctx.model(...)`` is the server's.
"""

from __future__ import annotations

import tether

app = tether.App()
MODEL = "openai/gpt-4o-mini"


def question(ctx: tether.AgentContext) -> list[tether.ChatMessage]:
    return [tether.ChatMessage("user", ctx.history[-1].text)]


@app.agent("relay")
async def relay(ctx: tether.AgentContext) -> None:
    """The model's answer, streamed into the session by ``respond``."""
    await ctx.model(MODEL).respond(question(ctx))


@app.agent("quiet")
async def quiet(ctx: tether.AgentContext) -> None:
    """The model's answer taken whole without emitting it; only the agent's words are."""
    reply = await ctx.model(MODEL).respond(question(ctx), emit=False)
    await ctx.text(f"The model said {len(reply.text.split())} words.")


@app.agent("counter")
async def counter(ctx: tether.AgentContext) -> None:
    """The model's stream taken part by part, without emitting it."""
    pieces = 0
    async for item in ctx.model(MODEL).stream(question(ctx), emit=False):
        if isinstance(item, tether.TextDelta):
            pieces += 1
    await ctx.text(f"{pieces} pieces")
