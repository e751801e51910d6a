"""The client requests of a run that `tether chat` answers at the prompt (the client channel).

``confirm`` is asked ``MESSAGE [y/N]``; ``signin`` shows each toolset's sign-in
URL (to open in a browser) and asks ``signed in to NAME? [y/N]``; ``input``
asks each property of its schema in turn (an empty line leaves an optional
one out; ``!decline`` or ``!cancel`` at any of them answers so). Requests of
another method are only noted: another client may serve them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from tether.cli.chat_render import Screen
from tether.client import Tether
from tether.client.errors import BadRequest, Conflict
from tether.client.events import ClientRequest, ClientResponse, Event
from tether.client.models import SessionSnapshot

ANSWERED_HERE = frozenset({"confirm", "signin", "input"})


class PendingRequests:
    """The session's client requests that wait for an answer from this terminal."""

    def __init__(self) -> None:
        #: request id -> (method, params), unanswered, oldest first.
        self.open: dict[str, tuple[str, Any]] = {}

    def see(self, event: Event) -> bool:
        """Take note of ``event``; True when a request has just come (ask now)."""
        if isinstance(event, ClientRequest):
            self.open[event.request_id] = (event.method, event.params)
            return True
        if isinstance(event, ClientResponse):
            self.open.pop(event.request_id, None)
        return False

    def take_up(self, snapshot: SessionSnapshot) -> None:
        """The requests of the snapshot that wait for an answer."""
        for req in snapshot.client_requests:
            if req.answerable(snapshot.active_run):
                self.open[req.request_id] = (req.method, req.params)

    def ask(self, client: Tether, session_id: str, screen: Screen) -> None:
        """Ask at the prompt for what the requests need (EOFError at the end of input)."""
        for request_id, (method, params) in list(self.open.items()):
            del self.open[request_id]
            if method not in ANSWERED_HERE:
                screen.note(f"the session asks its clients for {method}: not answered here")
                continue
            result = _ASK[method](params or {}, screen)
            with contextlib.suppress(Conflict):  # answered elsewhere first
                try:
                    client.respond(session_id, request_id, result)
                except BadRequest as err:  # e.g. a value the schema refuses
                    screen.line(f"not accepted: {err.message}; declined")
                    client.respond(session_id, request_id, {"action": "decline"})


def _yes(screen: Screen, prompt: str) -> bool:
    return screen.ask(prompt).strip().lower() in ("y", "yes")


def _confirm(params: dict[str, Any], screen: Screen) -> dict[str, Any]:
    return {"confirmed": _yes(screen, f"{params.get('message', 'Confirm?')} [y/N] ")}


def _signin(params: dict[str, Any], screen: Screen) -> dict[str, Any]:
    results = {}
    for toolset in params.get("toolsets", []):
        name = toolset.get("name") or toolset["id"]
        screen.note(f"sign in to {name}: {toolset.get('url')}")
        signed = _yes(screen, f"signed in to {name}? [y/N] ")
        results[toolset["id"]] = {"status": "signed_in" if signed else "declined"}
    return results


def _input(params: dict[str, Any], screen: Screen) -> dict[str, Any]:
    schema = params.get("schema") or {}
    screen.note(f"{params.get('message', '')} (!decline or !cancel to refuse)")
    content: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        line = screen.ask(f"{prop.get('title') or name} ({prop.get('type')})> ").strip()
        if line in ("!decline", "!cancel"):
            return {"action": line[1:]}
        if line:
            content[name] = _typed(line, prop.get("type"))
    return {"action": "accept", "content": content}


def _typed(line: str, kind: Any) -> Any:
    """The line as the property's type, or as typed if it is not one (the server says so)."""
    try:
        if kind == "integer":
            return int(line)
        if kind == "number":
            return float(line)
    except ValueError:
        return line
    if kind == "boolean":
        return line.lower() in ("y", "yes", "true", "1")
    return line


_ASK = {"confirm": _confirm, "signin": _signin, "input": _input}
