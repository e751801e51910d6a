"""The slash commands of `tether chat`.

A line that starts with one of these names is a command; any other line is a
message, so the demo model's ``/count 3`` or ``/tool NAME JSON`` are sent as
typed. ``//`` sends a message that starts with ``/`` (``//new`` sends ``/new``).
A session's model and system prompt are fixed when it is made, so ``/model``
and ``/system`` begin a new session with the new setting.
"""

from __future__ import annotations

from typing import Protocol


class Quit(Exception):
    """``/quit``: leave the chat."""


HELP = """\
/new            a new session (same model, agent and system prompt)
/model NAME     a new session with model NAME; /model alone lists the models
/system TEXT    a new session with this system prompt; /system alone shows it
/sessions       your sessions (the current one starred); rejoin one: tether chat --session ID
/quit           leave (Ctrl-D too); /help shows this
End a line with \\ to go on on the next line (a multi-line message).
A tool's result: type JSON or text; start it with ! to answer with an error.
Ctrl-C during an answer cancels it; Ctrl-C at the prompt leaves.
A message that starts with / is sent as typed, unless it is one of the above (// sends one /)."""


class Controls(Protocol):
    """What the commands act on: the chat."""

    def note(self, text: str) -> None: ...

    def new_session(self, *, model: str | None = None, system: str | None = None) -> None: ...

    def show_models(self) -> None: ...

    def show_system(self) -> None: ...

    def show_sessions(self) -> None: ...


def run_command(line: str, chat: Controls) -> str | None:
    """Do the command on ``line``, if it is one; else the message to send (None: nothing)."""
    if line.startswith("//"):
        return line[1:]
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        raise Quit
    if name == "/help":
        chat.note(HELP)
    elif name == "/new":
        chat.new_session()
    elif name == "/model":
        if arg:
            chat.new_session(model=arg)
        else:
            chat.show_models()
    elif name == "/system":
        if arg:
            chat.new_session(system=arg)
        else:
            chat.show_system()
    elif name == "/sessions":
        chat.show_sessions()
    else:
        return line
    return None
