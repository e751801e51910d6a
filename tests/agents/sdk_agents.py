"""OpenAI Agents SDK agents for the adapter's tests, served with ``tether serve sdk_agents:app``.

They name no key and no OpenAI client: their model calls go through the server.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, ModelSettings, RunContextWrapper, WebSearchTool, function_tool
from agents.tracing import get_current_trace
from pydantic import BaseModel

from tether.adapters.openai_agents import serve
from tether.agents.app import App

app = App()
MODEL = "openai/gpt-4o-mini"


@function_tool
def get_weather(city: str) -> dict[str, object]:
    """The weather in a city."""
    # The SDK exports what a trace holds: tether turns tracing off for its runs.
    trace = get_current_trace()
    return {"city": city, "sky": "sunny", "traced": trace is not None and bool(trace.export())}


@function_tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (a person approves each call)."""
    return f"deleted {path}"


weather = Agent(name="Weather", instructions="Answer weather questions.", tools=[get_weather])
serve(app, "weather", weather, model=MODEL)

billing = Agent(name="Billing", instructions="Answer billing questions.", model=MODEL)
triage = Agent(
    name="Triage", instructions="Hand billing questions over.", model=MODEL, handoffs=[billing]
)
serve(app, "triage", triage)


async def leaves_tmp(_ctx: RunContextWrapper[Any], arguments: dict[str, Any], _call: str) -> bool:
    return not str(arguments.get("dst", "")).startswith("/tmp/")


@function_tool(needs_approval=leaves_tmp)
def move_file(src: str, dst: str) -> str:
    """Move a file (a person approves moves out of /tmp)."""
    return f"moved {src} to {dst}"


files = Agent(
    name="Files", instructions="Manage files.", model=MODEL, tools=[delete_file, move_file]
)
serve(app, "files", files)


class Forecast(BaseModel):
    city: str
    celsius: int


forecaster = Agent(
    name="Forecaster",
    instructions="Forecast.",
    model=MODEL,
    output_type=Forecast,
    model_settings=ModelSettings(temperature=0.2, max_tokens=50),
)
serve(app, "forecaster", forecaster)

searcher = Agent(name="Searcher", instructions="Search.", model=MODEL, tools=[WebSearchTool()])
serve(app, "searcher", searcher)
