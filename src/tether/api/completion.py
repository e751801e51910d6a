"""A gateway request, parsed: what every front (Chat Completions, Responses,
Messages) turns its own request into, and what :class:`~tether.api.gateway.Gateway`
runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.agents.gateway import GatewaySpec
from tether.api.openai.errors import invalid


@dataclass(slots=True)
class Completion:
    """A validated request: the session to create (or continue) and what to run in it."""

    spec: GatewaySpec
    system: str | None
    #: Earlier turns, in Runtime.seed's form.
    seed: list[dict[str, Any]]
    #: Parts of the last user message, when the request ends with one; else the
    #: run continues after the seeded turns (tool results, an assistant turn).
    send: list[dict[str, Any]] | None
    title: str = "Chat completion"
    #: Continue this session (the caller checked it is the caller's) instead of
    #: creating one: a follow-up of an earlier response.
    session_id: str | None = None
    #: In a continued session: the message the new input follows (None: its leaf).
    parent_id: str | None = None
    #: In a continued session: results of tool calls an earlier run placed,
    #: ``{"tool_call_id", "output"}``, written before the run answers.
    results: list[dict[str, Any]] = field(default_factory=list)


def split_send(turns: list[dict[str, Any]], param: str) -> list[dict[str, Any]] | None:
    """The last turn's parts when it is the user's (taken off ``turns``: the message to send).

    Earlier user turns become text, the form Runtime.seed takes: their images
    and files are refused (400 naming ``param``).
    """
    send = None
    if turns and turns[-1]["role"] == "user":
        send = turns.pop()["parts"] or [{"type": "text", "text": ""}]
    for turn in turns:
        if turn["role"] == "user":
            parts = turn.pop("parts")
            if any(p.get("type") != "text" for p in parts):
                raise invalid(
                    "Images and files are supported in the last user message only.",
                    param,
                    "unsupported_content",
                )
            turn["text"] = "".join(p["text"] for p in parts)
    return send
