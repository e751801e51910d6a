"""An app whose agent answers at length: more than the socket buffers of a stalled client hold."""

from __future__ import annotations

import asyncio

import tether
from tether.agents.context import AgentContext

app = tether.App()

#: 512 pieces of 16 KiB: 8 MiB, past what the kernel buffers for a loopback socket (4 MiB).
PIECES, PIECE = 512, 16 * 1024
#: Seconds between pieces: a client that reads keeps up.
PACE = 0.01


@app.agent("long")
async def long(ctx: AgentContext) -> None:
    """Answers with :data:`PIECES` pieces of text, each naming its number, at :data:`PACE`."""
    for n in range(PIECES):
        await ctx.text(f"{n:06d}".ljust(PIECE, "."))
        await asyncio.sleep(PACE)
