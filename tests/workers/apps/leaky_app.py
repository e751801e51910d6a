"""An agent whose module logs secrets of its environment at debug level, through a log
handler of its own added at import: a provider key (``TETHER_OPENAI_API_KEY``) and the
value of ``CALC_TOKEN``, which the handler's ``TETHER_CONFIG`` passes to an MCP server."""

from __future__ import annotations

import logging
import os
import sys

from tether import App
from tether.agents.context import AgentContext

log = logging.getLogger("leaky_app")
log.addHandler(logging.StreamHandler(sys.stderr))
log.setLevel(logging.DEBUG)
log.debug("imported with key %s", os.environ.get("TETHER_OPENAI_API_KEY"))

app = App()


@app.agent("leaky")
async def leaky(ctx: AgentContext) -> None:
    key, token = os.environ.get("TETHER_OPENAI_API_KEY"), os.environ.get("CALC_TOKEN")
    log.debug("running with key %s and the calculator's token %s", key, token)
    await ctx.text("logged")
