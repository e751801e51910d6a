"""Framework agents whose tools leave a trace, for ``test_adapters_continue_e2e.py``.

Served as ``durable_agents:app``: a Pydantic AI agent and an OpenAI Agents SDK
agent, each with a tool the framework runs itself (``note``), and one that
waits on a person (a client tool, or an approval). The tools that run write a
line to ``$TETHER_TEST_TOOL_LOG`` each time, so a test counts executions
across server processes.
"""

from __future__ import annotations

import os

import agents
import pydantic_ai

import tether
from tether.adapters import openai_agents
from tether.adapters import pydantic_ai as pydantic_adapter

app = tether.App()
MODEL = "openai/gpt-4o-mini"


def _ran(line: str) -> None:
    with open(os.environ["TETHER_TEST_TOOL_LOG"], "a") as log:
        log.write(line + "\n")


def note(n: int) -> str:
    """Write down a number."""
    _ran(f"note {n}")
    return f"noted {n}"


def send_email(to: str) -> str:
    """Send an email (a person approves each call first)."""
    _ran(f"send_email {to}")
    return f"sent to {to}"


def ask_user(question: str) -> str:
    """Ask the person a question: a client answers it."""
    raise pydantic_ai.CallDeferred


notes = pydantic_ai.Agent(instructions="Take notes, then check with the person.")
notes.tool_plain(note)
notes.tool_plain(ask_user)
notes.tool_plain(requires_approval=True)(send_email)
pydantic_adapter.serve(app, "pydantic-notes", notes, model=MODEL)

sdk_notes = agents.Agent(
    name="Notes",
    instructions="Take notes, then email.",
    model=MODEL,
    tools=[agents.function_tool(note), agents.function_tool(send_email, needs_approval=True)],
)
openai_agents.serve(app, "sdk-notes", sdk_notes)
