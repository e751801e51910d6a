"""`tether chat` and `tether tail`: the terminal side of a session.

Both go through the Python SDK, which resumes by offset on its own, so a chat
survives the server restarting mid-answer: the answer continues where it was.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass

import click

from tether.client import Tether
from tether.client._sync import Run
from tether.client.errors import Conflict, TetherError
from tether.client.events import (
    ErrorEvent,
    Event,
    PartDelta,
    PartEnd,
    PartStart,
    Retry,
    RunEnd,
    ToolApproval,
    ToolResult,
)
from tether.client.models import SessionSnapshot

DIM, RESET = "\033[2m", "\033[0m"


def _paint(text: str, style: str) -> str:
    return f"{style}{text}{RESET}" if sys.stdout.isatty() else text


def chat_loop(
    client: Tether,
    session_id: str,
    server_tools: frozenset[str] = frozenset(),
    snapshot: SessionSnapshot | None = None,
) -> None:
    """Read a line, stream the answer; Ctrl-C stops the answer, Ctrl-D quits.

    When the answer calls a tool, the call is shown and its result (or
    approval) is asked for at the prompt; ``server_tools`` are the names of
    tools the server runs itself, whose results are not asked for. A chat
    that joins a session with a run in progress (``snapshot``) takes that run
    up first: its answer so far, what it waits for asked as if it had just
    come (however long ago it was asked, across server restarts), then the
    rest of it as it comes.
    """
    run = client.attach(snapshot) if snapshot is not None else None
    if run is not None and snapshot is not None:
        calls = PendingCalls(server_tools)
        calls.take_up(snapshot)
        answer = snapshot.answer()
        click.echo("assistant> " + (answer.text if answer is not None else ""), nl=False)
        _follow(run, calls)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            click.echo()
            return
        if not line:
            continue
        run = client.send(session_id, line)
        if run.queued:
            click.echo(_paint("(queued behind the run in progress)", DIM))
        click.echo("assistant> ", nl=False)
        _follow(run, PendingCalls(server_tools))


def _follow(run: Run, calls: PendingCalls) -> None:
    """Show a run's events until its end, asking for what its tool calls need."""
    kinds: dict[str, str] = {}
    try:
        calls.ask(run)  # what a run taken up already waits for
        for event in run.stream():
            _show(event, kinds)
            if calls.see(event):
                calls.ask(run)
    except KeyboardInterrupt:
        run.cancel()
        click.echo(_paint(" [cancelled]", DIM), nl=False)
    click.echo()


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

    def ask(self, run: Run) -> None:
        """Ask at the prompt for what the waiting calls need."""
        for call_id, call in list(self.open.items()):
            if not call.whole or (not call.approval and call.name in self.server_tools):
                continue
            shown = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})"
            click.echo()
            try:
                if call.approval:
                    line = input(f"approve {shown}? [y/N] ").strip().lower()
                    with contextlib.suppress(Conflict):
                        run.tool_approval(call_id, line in ("y", "yes"))
                    continue
                line = input(f"result of {shown}> ").strip()
            except EOFError:
                return
            output: object = line
            with contextlib.suppress(ValueError):
                output = json.loads(line)
            with contextlib.suppress(Conflict):
                run.tool_result(call_id, output=output)


def _show(event: Event, kinds: dict[str, str]) -> None:
    """Print one event of an answer; ``kinds`` remembers each part's kind."""
    if isinstance(event, PartStart):
        kinds[event.part_id] = event.kind
        if event.kind == "tool-call":
            click.echo(_paint(f"[calls tool {event.tool_name}]", DIM), nl=False)
    elif isinstance(event, PartDelta):
        dim = kinds.get(event.part_id) in ("reasoning", "tool-call")
        click.echo(_paint(event.delta, DIM) if dim else event.delta, nl=False)
    elif isinstance(event, Retry):
        click.echo(_paint(f"[retry {event.attempt}: {event.error}]", DIM), nl=False)
    elif isinstance(event, ErrorEvent):
        click.echo(_paint(f"[error: {event.message}]", DIM), nl=False)
    elif isinstance(event, RunEnd) and event.reason != "complete":
        click.echo(_paint(f" [{event.reason}]", DIM), nl=False)


@click.command()
@click.option("--url", envvar="TETHER_URL", default="http://127.0.0.1:4437", show_default=True)
@click.option("--model", default=None, help="Model for a new session (default: demo).")
@click.option("--agent", default=None, help="Agent for a new session.")
@click.option("--session", "session_id", default=None, help="Continue this session.")
def chat(url: str, model: str | None, agent: str | None, session_id: str | None) -> None:
    """Chat in the terminal; answers stream live and survive server restarts."""
    try:
        with Tether(url) as client:
            snapshot = None
            if session_id is None:
                session = client.sessions.create(model=model, agent=agent)
            else:
                session = snapshot = client.sessions.get(session_id)
            # The server runs these itself: nobody is asked for their results.
            server_tools = frozenset(t["name"] for t in client.server_tools())
            click.echo(_paint(f"session {session.id} (Ctrl-C stops an answer, Ctrl-D quits)", DIM))
            chat_loop(client, session.id, server_tools, snapshot)
    except TetherError as err:
        raise click.ClickException(str(err)) from err


@click.command()
@click.argument("session_id")
@click.option("--url", envvar="TETHER_URL", default="http://127.0.0.1:4437", show_default=True)
@click.option(
    "--offset", default="-1", show_default=True, help="Where to start (-1, now, or an offset)."
)
def tail(session_id: str, url: str, offset: str) -> None:
    """Follow a session's raw events, one JSON object per line, with its offset."""
    try:
        with Tether(url) as client:
            for event in client.events(session_id, offset=offset):
                click.echo(json.dumps({"offset": event.offset, **event.raw}))
    except TetherError as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        pass
