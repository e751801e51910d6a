"""An agent for the runtime benchmark: paced tokens that carry their birth time.

Each token is the wall-clock nanosecond at which the agent yields it, so a
reader on the same machine measures the runtime's whole cost (event append,
fan-out, SSE encoding, HTTP) from yield to receipt.
"""

from __future__ import annotations

import asyncio
import time

from tether import App
from tether.runtime.context import RunContext

app = App()


@app.agent("ticker")
async def ticker(ctx: RunContext) -> None:
    words = ctx.history[-1].text.split()
    count, per_second = int(words[0]), float(words[1])
    interval = 1.0 / per_second
    next_at = time.monotonic()
    for _ in range(count):
        await ctx.text(f"{time.time_ns()} ")
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
