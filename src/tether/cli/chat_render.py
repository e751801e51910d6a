"""How `tether chat` shows an answer: Markdown in a terminal, plain text in a pipe.

One screen per chat, fed the run's events as they come. In a terminal (rich):
the answer's text is rendered as Markdown, live while it streams (the last
screenful) and whole once its part ends; reasoning is dim, italic and
prefixed; tool calls, retries, errors and notices are lines of their own.
In a pipe or a file: the text as it comes, after ``assistant> ``, with the
same lines, and notices on stderr, so scripts read only the conversation.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from tether.client.events import (
    ErrorEvent,
    Event,
    PartDelta,
    PartEnd,
    PartStart,
    Retry,
    RunEnd,
    ToolResult,
)
from tether.client.models import Message

#: Live redraws of a streaming answer a second, at most.
REFRESH_PER_SECOND = 10
#: Characters of a tool's result shown on its line.
RESULT_WIDTH = 200


def call_line(name: str, arguments: Any) -> str:
    return f"tool call: {name} {json.dumps(arguments, ensure_ascii=False)}"


def retry_line(ev: Retry) -> str:
    delay = f" in {ev.delay_ms / 1000:g} s" if ev.delay_ms is not None else ""
    return f"retry {ev.attempt or '?'}{delay}: {ev.error or 'the model call failed'}"


def error_line(ev: ErrorEvent) -> str:
    code = f" ({ev.code})" if ev.code else ""
    return f"error{code}: {ev.message or 'the run failed'}"


def result_line(ev: ToolResult) -> str:
    shown = f"failed: {ev.error}" if ev.error is not None else json.dumps(ev.output)
    if len(shown) > RESULT_WIDTH:
        shown = shown[: RESULT_WIDTH - 1] + "…"
    return f"tool result: {shown}"


def story_line(ev: Event) -> str | None:
    """The line of a run's event that is not part of the answer's text, if it has one."""
    if isinstance(ev, Retry):
        return retry_line(ev)
    if isinstance(ev, ErrorEvent):
        return error_line(ev)
    if isinstance(ev, ToolResult):
        return result_line(ev)
    if isinstance(ev, RunEnd) and ev.reason != "complete":
        return f"({ev.reason})"
    return None


class Screen(Protocol):
    """What the chat writes to."""

    def note(self, text: str) -> None:
        """A line about the chat itself (session, reconnecting, help)."""

    def line(self, text: str) -> None:
        """A line of the conversation's story (a retry, an error, a tool call)."""

    def user(self, text: str) -> None:
        """A message the user sent earlier (shown with ``--session``)."""

    def answer(self, message: Message, live: bool = False) -> None:
        """An answer as it stands; ``live``: the events that follow continue it."""

    def event(self, ev: Event) -> None:
        """One event of the run being followed."""

    def end(self) -> None:
        """The answer is over (or left): finish its lines."""

    def ask(self, prompt: str) -> str:
        """A line typed at ``prompt`` (EOFError at the end of input)."""


class _AnswerState:
    """The kinds and texts of an answer's parts, what both screens need to show it."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.texts: dict[str, str] = {}

    def start(self, ev: PartStart) -> None:
        self.kinds[ev.part_id] = ev.kind
        self.names[ev.part_id] = ev.tool_name or "?"
        self.texts[ev.part_id] = ""

    @classmethod
    def of(cls, message: Message) -> _AnswerState:
        """The parts of an answer so far, which the events that follow continue."""
        state = cls()
        for part in message.parts:
            state.kinds[part.id] = part.kind
            state.names[part.id] = part.tool_name or "?"
            state.texts[part.id] = part.text
        return state


class PlainScreen:
    """For a pipe or a file: no colour, no cursor movement; notices on stderr.

    Each text part of an answer begins a line with ``assistant> ``.
    """

    def __init__(self) -> None:
        self._parts = _AnswerState()
        self._at_line_start = True

    def _write(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self._at_line_start = text.endswith("\n")

    def _break(self) -> None:
        if not self._at_line_start:
            self._write("\n")

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def line(self, text: str) -> None:
        self._break()
        self._write(text + "\n")

    def user(self, text: str) -> None:
        self.line(f"you> {text}")

    def answer(self, message: Message, live: bool = False) -> None:
        self._parts = _AnswerState.of(message)
        for part in message.parts:
            if part.kind == "text" and live and not part.done:  # its deltas continue it
                self._break()
                self._write("assistant> " + part.text)
            elif part.kind == "text":
                self.line("assistant> " + part.text)
            elif part.kind == "reasoning":
                self.line(f"thinking: {part.text}")
            elif part.kind == "tool-call" and part.done:
                self.line(call_line(part.tool_name or "?", part.value))
        if not live:
            self.end()

    def event(self, ev: Event) -> None:
        if isinstance(ev, PartStart):
            self._parts.start(ev)
            if ev.kind in ("text", "reasoning"):
                self._break()
                self._write("assistant> " if ev.kind == "text" else "thinking: ")
        elif isinstance(ev, PartDelta):
            if self._parts.kinds.get(ev.part_id) in ("text", "reasoning"):
                self._write(ev.delta)
        elif isinstance(ev, PartEnd):
            kind = self._parts.kinds.get(ev.part_id)
            if kind == "reasoning":
                self._break()
            elif kind == "tool-call":
                self.line(call_line(self._parts.names[ev.part_id], ev.value))
        elif (line := story_line(ev)) is not None:
            self.line(line)

    def end(self) -> None:
        self._break()
        self._parts = _AnswerState()

    def ask(self, prompt: str) -> str:
        self._break()
        line = input(prompt)
        self._at_line_start = True
        return line


class _Tail:
    """Markdown, cut to its last screenful: what a streaming answer shows live."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(Markdown(self.text), options.update(height=None), pad=False)
        keep = max(console.size.height - 2, 1)
        for line in lines[-keep:]:
            yield from line
            yield Segment.line()


class RichScreen:
    """For a terminal: Markdown answers, dim italic reasoning, dim notices."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=False)
        self._parts = _AnswerState()
        self._live: Live | None = None
        self._live_part: str | None = None
        self._at_line_start = True

    def _print(self, text: str, style: str = "", end: str = "\n") -> None:
        self.console.print(Text(text, style=style), end=end, soft_wrap=True)
        self._at_line_start = end.endswith("\n") or (not end and text.endswith("\n"))

    def _break(self) -> None:
        self._close_live()
        if not self._at_line_start:
            self._print("")

    def note(self, text: str) -> None:
        if self._live is not None:  # printed above the streaming answer
            self.console.print(Text(text, style="dim"))
            return
        self._break()
        self._print(text, "dim")

    def line(self, text: str) -> None:
        self._break()
        self._print(text, "yellow")

    def user(self, text: str) -> None:
        self._break()
        self._print(f"you> {text}", "bold")

    def answer(self, message: Message, live: bool = False) -> None:
        self._parts = _AnswerState.of(message)
        for part in message.parts:
            if part.kind == "text" and live and not part.done:
                self._open_live(part.id)
            elif part.kind == "text":
                self._markdown(part.text)
            elif part.kind == "reasoning":
                self._break()
                self._print(f"thinking: {part.text}", "dim italic")
            elif part.kind == "tool-call" and part.done:
                self.line(call_line(part.tool_name or "?", part.value))
        if not live:
            self.end()

    def event(self, ev: Event) -> None:
        if isinstance(ev, PartStart):
            self._parts.start(ev)
            if ev.kind == "text":
                self._open_live(ev.part_id)
            elif ev.kind == "reasoning":
                self._break()
                self._print("thinking: ", "dim italic", end="")
        elif isinstance(ev, PartDelta):
            self._delta(ev)
        elif isinstance(ev, PartEnd):
            kind = self._parts.kinds.get(ev.part_id)
            if kind == "text" and ev.part_id == self._live_part:
                self._close_live()
            elif kind == "reasoning":
                self._print("")
            elif kind == "tool-call":
                self.line(call_line(self._parts.names[ev.part_id], ev.value))
        elif (line := story_line(ev)) is not None:
            self._break()
            self._print(line, "bold red" if isinstance(ev, ErrorEvent) else "yellow")

    def _delta(self, ev: PartDelta) -> None:
        kind = self._parts.kinds.get(ev.part_id)
        if kind == "reasoning":
            self._print(ev.delta, "dim italic", end="")
        elif kind == "text":
            self._parts.texts[ev.part_id] += ev.delta
            if self._live_part != ev.part_id:
                self._open_live(ev.part_id)
            assert self._live is not None
            self._live.update(_Tail(self._parts.texts[ev.part_id]))

    def _open_live(self, part_id: str) -> None:
        self._break()
        self._live_part = part_id
        self._live = Live(
            _Tail(self._parts.texts.get(part_id, "")),
            console=self.console,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=True,
        )
        self._live.start()

    def _close_live(self) -> None:
        """Stop the live view; the text it showed is printed whole, as Markdown."""
        live, part = self._live, self._live_part
        if live is None or part is None:
            return
        self._live = self._live_part = None
        live.stop()
        self._markdown(self._parts.texts.get(part, ""))

    def _markdown(self, text: str) -> None:
        self._break()
        if text:
            self.console.print(Markdown(text))
        self._at_line_start = True

    def end(self) -> None:
        self._break()
        self._parts = _AnswerState()

    def ask(self, prompt: str) -> str:
        self._break()
        return input(prompt)


def open_screen() -> Screen:
    """Rich in a terminal, plain text in a pipe or a file."""
    return RichScreen() if sys.stdout.isatty() else PlainScreen()
