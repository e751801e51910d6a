"""`tether chat` and `tether tail`: the terminal side of a session.

Both go through the Python SDK, which resumes by offset on its own, so a chat
survives the server restarting mid-answer: it says "reconnecting…" while the
server is away, and the answer continues where it was once it is back.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import click

from tether.cli.chat_commands import Quit, run_command
from tether.cli.chat_render import Screen, open_screen
from tether.cli.chat_requests import PendingRequests
from tether.cli.chat_tools import PendingCalls
from tether.cli.remote import explain, fail, open_client, server_options
from tether.cli.sessions_cmd import session_rows
from tether.client import Run, Tether
from tether.client.errors import NotFound, TetherError
from tether.client.models import Message, SessionSnapshot

#: Seconds a chat keeps reconnecting to a server that is away (Ctrl-C gives up sooner).
RECONNECT_FOR = 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """What a new session is made with."""

    model: str | None = None
    agent: str | None = None
    system: str | None = None


def _text(message: Message) -> str:
    return "".join(p.text for p in message.parts if p.kind == "text")


class Chat:
    """One terminal's conversation: the prompt, the answers, the commands."""

    def __init__(
        self,
        client: Tether,
        screen: Screen,
        settings: Settings,
        server_tools: frozenset[str],
        api_key: str | None = None,
    ) -> None:
        self.client = client
        self.api_key = api_key
        self.screen = screen
        self.settings = settings
        #: Tools the server runs itself: nobody here is asked for their results.
        self.server_tools = server_tools
        self.session_id = ""

    # -- sessions ------------------------------------------------------------------

    def new_session(self, *, model: str | None = None, system: str | None = None) -> None:
        settings = self.settings
        if model is not None:
            settings = replace(settings, model=model, agent=None)
        if system is not None:
            settings = replace(settings, system=system)
        session = self.client.sessions.create(
            model=settings.model, agent=settings.agent, system=settings.system
        )
        self.settings = replace(settings, model=session.model, agent=session.agent)
        self.session_id = session.id
        self._banner()

    def join(self, snapshot: SessionSnapshot) -> None:
        """Show the session's conversation so far, then take up its active run, if any."""
        self.session_id = snapshot.id
        self.settings = Settings(snapshot.model, snapshot.agent, snapshot.system)
        active = snapshot.answer()
        for message in snapshot.messages:
            if message.role == "user":
                self.screen.user(_text(message))
            elif message is not active:
                self.screen.answer(message)
        self._banner()
        run = self.client.attach(snapshot)
        if run is not None and active is not None:
            self.screen.answer(active, live=True)
            calls = PendingCalls(self.server_tools)
            calls.take_up(snapshot)
            requests = PendingRequests()
            requests.take_up(snapshot)
            self.follow(run, calls, requests)

    def _banner(self) -> None:
        s = self.settings
        what = f"model {s.model}" if s.model else "the default model"
        if s.agent:
            what = f"agent {s.agent}"
        system = " · system prompt set" if s.system else ""
        self.note(f"session {self.session_id} · {what}{system} · /help for commands, Ctrl-D quits")

    def note(self, text: str) -> None:
        self.screen.note(text)

    def _explain(self, err: TetherError) -> str:
        return explain(err, self.client.base_url, self.api_key)

    def show_models(self) -> None:
        self.note(f"this session: {self.settings.model or self.settings.agent or 'default'}")
        self.note("models: " + ", ".join(self.client.models()))

    def show_system(self) -> None:
        self.note(f"system prompt: {self.settings.system or '(none)'}")

    def show_sessions(self) -> None:
        self.note("\n".join(session_rows(self.client.sessions.list(), self.session_id)))

    # -- the conversation ------------------------------------------------------------

    def loop(self) -> None:
        """Read a message or a command, answer it; until EOF or /quit."""
        while True:
            try:
                message = run_command(self._read(), self)
                if message is not None:
                    self.send(message)
            except Quit:
                return
            except TetherError as err:
                self.screen.end()
                self.screen.line(self._explain(err))

    def _read(self) -> str:
        """A message; a line ending with a backslash goes on on the next line."""
        lines = [self.screen.ask("you> ")]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            lines.append(self.screen.ask("...> "))
        return "\n".join(lines).strip()

    def send(self, text: str) -> None:
        if not text:
            return
        run = self.client.send(self.session_id, text)
        if run.queued:
            self.note("(queued behind the run in progress)")
        self.follow(run, PendingCalls(self.server_tools))

    def follow(
        self, run: Run, calls: PendingCalls, requests: PendingRequests | None = None
    ) -> None:
        """Show the run to its end, asking what its tool calls and client requests
        need; Ctrl-C cancels it."""
        requests = requests or PendingRequests()
        try:
            calls.ask(run, self.screen)  # what a run taken up already waits for
            requests.ask(self.client, self.session_id, self.screen)
            for event in run.stream():
                self.screen.event(event)
                if calls.see(event):
                    calls.ask(run, self.screen)
                if requests.see(event):
                    requests.ask(self.client, self.session_id, self.screen)
        except KeyboardInterrupt:
            self.screen.end()
            self.note("cancelling this answer (Ctrl-C again quits)")
            try:
                run.cancel()
            except TetherError as err:
                self.screen.line("could not cancel: " + self._explain(err))
                return
            for event in run.stream():  # to its run-end, which says "cancelled"
                self.screen.event(event)
        finally:
            self.screen.end()


def _open_chat(
    client: Tether,
    screen: Screen,
    settings: Settings,
    session_id: str | None,
    api_key: str | None,
) -> Chat:
    """The chat, in a new session or joined to ``session_id`` (refused at once if unknown)."""
    server_tools = frozenset(t["name"] for t in client.server_tools())
    chat = Chat(client, screen, settings, server_tools, api_key)
    if session_id is None:
        chat.new_session()
        return chat
    try:
        snapshot = client.sessions.get(session_id)
    except NotFound as err:
        raise click.ClickException(
            f"no session {session_id!r} at {client.base_url} (`tether sessions` lists yours)"
        ) from err
    chat.join(snapshot)
    return chat


def _reconnect_notes(screen: Screen, url: str) -> Callable[[bool], None]:
    """What a chat says when the server goes away and comes back."""

    def on_change(up: bool) -> None:
        screen.note("reconnected" if up else f"reconnecting… (the server at {url} is away)")

    return on_change


@click.command()
@server_options
@click.option("--model", default=None, help="Model for a new session (default: demo).")
@click.option("--agent", default=None, help="Agent for a new session.")
@click.option("--system", default=None, help="System prompt for a new session.")
@click.option("--session", "session_id", default=None,
              help="Continue this session (its conversation is shown first).")  # fmt: skip
def chat(
    url: str,
    api_key: str | None,
    model: str | None,
    agent: str | None,
    system: str | None,
    session_id: str | None,
) -> None:
    """Chat in the terminal; answers stream live and survive server restarts.

    Type /help in the chat for its commands. Markdown is rendered when the
    output is a terminal; piped, the answers are plain text.
    """
    screen = open_screen()
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):  # line editing and history for input()
            import readline  # noqa: F401
    try:
        with open_client(
            url, api_key, first_event_timeout=None, idle_timeout=None,
            reconnect_timeout=RECONNECT_FOR,
        ) as (client, watch):  # fmt: skip
            watch.on_change = _reconnect_notes(screen, url)  # silent until a first answer
            chat = _open_chat(client, screen, Settings(model, agent, system), session_id, api_key)
            chat.loop()
    except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D at the prompt: leave quietly
        with contextlib.suppress(Exception):
            screen.end()
        click.echo()
    except TetherError as err:
        raise fail(err, url, api_key) from err


@click.command()
@click.argument("session_id")
@server_options
@click.option(
    "--offset", default="-1", show_default=True, help="Where to start (-1, now, or an offset)."
)
def tail(session_id: str, url: str, api_key: str | None, offset: str) -> None:
    """Follow a session's raw events, one JSON object per line, with its offset.

    Says where it connects on stderr; fails at once if nothing answers there.
    """
    click.echo(f"tether: connecting to {url}…", err=True)
    try:
        with open_client(url, api_key, reconnect_timeout=RECONNECT_FOR) as (client, watch):
            try:
                client.sessions.get(session_id)  # fails fast: no server, no key, no session
            except NotFound as err:
                raise click.ClickException(
                    f"no session {session_id!r} at {url} (`tether sessions` lists yours)"
                ) from err
            click.echo(f"tether: following session {session_id} from offset {offset}", err=True)
            watch.on_change = lambda up: click.echo(
                "tether: reconnected" if up else f"tether: reconnecting to {url}…", err=True
            )
            for event in client.events(session_id, offset=offset):
                click.echo(json.dumps({"offset": event.offset, **event.raw}))
    except TetherError as err:
        raise fail(err, url, api_key) from err
    except KeyboardInterrupt:
        pass
