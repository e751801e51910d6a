"""The tool calls of a run that `tether chat` answers at the prompt.

A call that needs approval is asked ``approve NAME(ARGS)? [y/N]``; a call the
client runs is asked ``result of NAME(ARGS)>``: the line typed is its result
(JSON if it parses, else the text), or its error if it starts with ``!``.
Calls of tools the server runs itself are only approved here, never answered.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from tether.cli.chat_render import Screen
from tether.client import Run
from tether.client.errors import Conflict
from tether.client.events import Event, PartEnd, PartStart, ToolApproval, ToolResult
from tether.client.models import SessionSnapshot


@dataclass(slots=True)
class _Call:
    name: str
    approval: bool
    arguments: object = None
    #: Its arguments are complete (its part has ended).
    whole: bool = False


class PendingCalls:
    """The tool calls of a run that wait for an answer from this terminal."""

    def __init__(self, server_tools: frozenset[str]) -> None:
        self.server_tools = server_tools
        self._by_part: dict[str, str] = {}  # part id -> call id
        #: Unanswered calls by id.
        self.open: dict[str, _Call] = {}

    def see(self, event: Event) -> bool:
        """Take note of ``event``; True when a call has just been made whole (ask now)."""
        if isinstance(event, PartStart) and event.kind == "tool-call" and event.tool_call_id:
            self._by_part[event.part_id] = event.tool_call_id
            self.open[event.tool_call_id] = _Call(
                event.tool_name or "?", bool(event.needs_approval)
            )
        elif isinstance(event, PartEnd) and event.part_id in self._by_part:
            call = self.open.get(self._by_part.pop(event.part_id))
            if call is not None:
                call.arguments = event.value
                call.whole = True
                return True
        elif isinstance(event, ToolResult):
            self.open.pop(event.tool_call_id, None)
        elif isinstance(event, ToolApproval) and event.tool_call_id in self.open:
            call = self.open[event.tool_call_id]
            if call.name in self.server_tools or not event.approved:
                del self.open[event.tool_call_id]  # the server runs it, or nothing does
            else:
                call.approval = False  # approved: its result is asked for next
                return True
        return False

    def take_up(self, snapshot: SessionSnapshot) -> None:
        """The calls of the snapshot's active run: those waiting, those still being made."""
        answer = snapshot.answer()
        for part in answer.parts if answer is not None else []:
            if part.kind == "tool-call" and part.tool_call_id and not part.done:
                self._by_part[part.id] = part.tool_call_id
                self.open[part.tool_call_id] = _Call(part.tool_name or "?", part.needs_approval)
        for call in snapshot.waiting_calls():
            self.open[call.id] = _Call(call.name or "?", call.needs_approval, call.arguments, True)

    def ask(self, run: Run, screen: Screen) -> None:
        """Ask at the prompt for what the waiting calls need (EOFError at the end of input)."""
        for call_id, call in list(self.open.items()):
            if not call.whole or (not call.approval and call.name in self.server_tools):
                continue
            shown = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})"
            if call.approval:
                line = screen.ask(f"approve {shown}? [y/N] ").strip().lower()
                with contextlib.suppress(Conflict):  # answered elsewhere first
                    run.tool_approval(call_id, line in ("y", "yes"))
                continue
            line = screen.ask(f"result of {shown}> ").strip()
            with contextlib.suppress(Conflict):
                if line.startswith("!"):
                    run.tool_result(call_id, error=line[1:].strip() or "failed")
                else:
                    run.tool_result(call_id, output=_value(line))


def _value(line: str) -> object:
    """The JSON value typed, or the text itself if it is not JSON."""
    try:
        return json.loads(line)
    except ValueError:
        return line
