"""`tether chat` and `tether tail`: the terminal side of a session.

Both go through the Python SDK, which resumes by offset on its own, so a chat
survives the server restarting mid-answer: the answer continues where it was.
"""

from __future__ import annotations

import json
import sys

import click

from tether.client import Tether
from tether.client.errors import TetherError
from tether.client.events import ErrorEvent, Event, PartDelta, PartStart, Retry, RunEnd

DIM, RESET = "\033[2m", "\033[0m"


def _paint(text: str, style: str) -> str:
    return f"{style}{text}{RESET}" if sys.stdout.isatty() else text


def chat_loop(client: Tether, session_id: str) -> None:
    """Read a line, stream the answer; Ctrl-C stops the answer, Ctrl-D quits."""
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
        kinds: dict[str, str] = {}
        click.echo("assistant> ", nl=False)
        try:
            for event in run.stream():
                _show(event, kinds)
        except KeyboardInterrupt:
            run.cancel()
            click.echo(_paint(" [cancelled]", DIM), nl=False)
        click.echo()


def _show(event: Event, kinds: dict[str, str]) -> None:
    """Print one event of an answer; ``kinds`` remembers each part's kind."""
    if isinstance(event, PartStart):
        kinds[event.part_id] = event.kind
        if event.kind == "tool-call":
            click.echo(_paint(f"[calls tool {event.tool_name}]", DIM), nl=False)
    elif isinstance(event, PartDelta):
        reasoning = kinds.get(event.part_id) == "reasoning"
        click.echo(_paint(event.delta, DIM) if reasoning else event.delta, nl=False)
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
            if session_id is None:
                session_id = client.sessions.create(model=model, agent=agent).id
            click.echo(_paint(f"session {session_id} (Ctrl-C stops an answer, Ctrl-D quits)", DIM))
            chat_loop(client, session_id)
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
