"""A tether app with server tools, served by the e2e tests as ``tool_app:app``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Literal

import tether
from tether.agents.context import AgentContext

app = tether.App()


@app.tool
def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """The weather in a city."""
    return {
        "city": city,
        "sky": "sunny",
        "unit": unit,
        "worker_thread": threading.current_thread() is not threading.main_thread(),
    }


@app.tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    await asyncio.sleep(0)
    return a + b


@app.tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"exploded: {reason}")


@app.tool(approval=True)
def delete_file(path: str) -> str:
    """Delete a file (a person approves each call first)."""
    Path(path).unlink()
    return f"deleted {path}"


@app.agent("mathy", tools=["add"])
async def mathy(ctx: AgentContext) -> None:
    """Asks the model once with its tools, runs what it called, says the outcome."""
    question = [{"role": "user", "content": ctx.history[-1].text}]
    reply = await ctx.model("openai/gpt-4o-mini").respond(question, tools=ctx.tools)
    outcomes = await ctx.run_tools(reply.tool_calls)
    await ctx.text(" ".join(str(o.output) for o in outcomes))
