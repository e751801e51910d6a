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
