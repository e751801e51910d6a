"""OpenAI Agents SDK agents for the adapter's tests, served with ``tether serve sdk_agents:app``.

They name no key and no OpenAI client: their model calls go through the server.
"""

from __future__ import annotations

from agents import Agent, function_tool
from agents.tracing import get_current_trace

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

files = Agent(name="Files", instructions="Manage files.", model=MODEL, tools=[delete_file])
serve(app, "files", files)
