"""Pydantic AI agents served by tether, for ``test_pydantic_ai_e2e.py``.

No provider key and no model client here: the agents' model calls go through
the server's ``openai/gpt-4o-mini``.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_ai import Agent, CallDeferred

import tether
from tether.adapters.pydantic_ai import serve

app = tether.App()

weather = Agent(instructions="You answer questions about the weather.")


@weather.tool_plain
def get_weather(city: str) -> dict[str, object]:
    """The weather in a city."""
    return {"city": city, "sky": "sunny", "c": 21}


@weather.tool_plain(requires_approval=True)
def book_umbrella(city: str) -> str:
    """Book an umbrella in a city."""
    return f"umbrella booked in {city}"


@weather.tool_plain
def ask_user(question: str) -> str:
    """Ask the person a question: a client answers it."""
    raise CallDeferred


serve(app, "weather", weather, model="openai/gpt-4o-mini")


class Forecast(BaseModel):
    city: str
    sky: str


forecaster = Agent(output_type=Forecast)
serve(app, "forecast", forecaster, model="openai/gpt-4o-mini")
