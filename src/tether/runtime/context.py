"""What an agent sees of a run: history in, text / reasoning / tool calls out.

Agents never touch the transport. Every call here appends events to the
session's stream; the runtime owns the run's beginning and its one end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tether.sessions import events as ev
from tether.sessions.fold import Message

AppendFn = Callable[[list[ev.Event]], Awaitable[int]]


@dataclass(slots=True)
class ToolOutcome:
    output: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Approval:
    approved: bool
    reason: str | None = None


class RunContext:
    def __init__(
        self,
        *,
        session_id: str,
        run_id: str,
        message_id: str,
        model: str | None,
        system: str | None,
        history: list[Message],
        append: AppendFn,
        waiters: dict[str, asyncio.Future[Any]],
        on_status: Callable[[str], Awaitable[None]],
    ) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self.message_id = message_id
        self.model = model
        self.system = system
        #: The current branch up to and including the message being answered.
        self.history = history
        self._append = append
        self._waiters = waiters
        self._on_status = on_status
        self._open: dict[str, str] = {}  # kind -> open part id
        self._parts = 0
        self._calls = 0
        self.attempt_parts: list[str] = []
        self.usage: dict[str, int] = {}

    # -- streaming output ------------------------------------------------------

    def _part_id(self) -> str:
        self._parts += 1
        return f"{self.message_id}:{self._parts}"

    async def _delta(self, kind: str, delta: str) -> None:
        if not delta:
            return
        part_id = self._open.get(kind)
        batch: list[ev.Event] = []
        if part_id is None:
            batch.extend(self._close_open())
            part_id = self._part_id()
            self._open[kind] = part_id
            self.attempt_parts.append(part_id)
            batch.append(
                ev.event(
                    ev.PART_START,
                    run_id=self.run_id,
                    message_id=self.message_id,
                    part_id=part_id,
                    kind=kind,
                )
            )
        batch.append(ev.event(ev.PART_DELTA, run_id=self.run_id, part_id=part_id, delta=delta))
        await self._append(batch)

    def _close_open(self) -> list[ev.Event]:
        closing = [
            ev.event(ev.PART_END, run_id=self.run_id, part_id=pid) for pid in self._open.values()
        ]
        self._open.clear()
        return closing

    async def text(self, delta: str) -> None:
        """Stream a piece of the answer's text."""
        await self._delta(ev.TEXT, delta)

    async def reasoning(self, delta: str) -> None:
        """Stream a piece of visible reasoning."""
        await self._delta(ev.REASONING, delta)

    async def add_usage(self, **counts: int) -> None:
        for key, n in counts.items():
            self.usage[key] = self.usage.get(key, 0) + n

    # -- tools ----------------------------------------------------------------

    async def place_tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        call_id: str | None = None,
        approval: bool = False,
    ) -> str:
        """Put a tool call in the answer for a client to run, without waiting; returns its id."""
        self._calls += 1
        call_id = call_id or f"call_{self.run_id}_{self._calls}"
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        try:
            value = json.loads(args)
        except ValueError:
            value = args
        part_id = self._part_id()
        batch = self._close_open()
        batch += [
            ev.event(
                ev.PART_START,
                run_id=self.run_id,
                message_id=self.message_id,
                part_id=part_id,
                kind=ev.TOOL_CALL,
                tool_call_id=call_id,
                tool_name=name,
                needs_approval=approval or None,
            ),
            ev.event(ev.PART_END, run_id=self.run_id, part_id=part_id, value=value),
        ]
        await self._append(batch)
        return call_id

    async def tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        call_id: str | None = None,
        approval: bool = False,
    ) -> ToolOutcome:
        """Ask a client to run tool ``name`` and wait for its result.

        With ``approval=True`` a client must first approve the call; a refusal
        comes back as an error outcome without the tool running.
        """
        call_id = await self.place_tool_call(name, arguments, call_id=call_id, approval=approval)
        if approval:
            verdict: Approval = await self._wait(f"approval:{call_id}")
            if not verdict.approved:
                return ToolOutcome(error=f"not approved: {verdict.reason or 'refused'}")
        return await self._wait(f"result:{call_id}")

    async def _wait(self, key: str) -> Any:
        fut = self._waiters.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[key] = fut
        await self._on_status(ev.PAUSED)
        try:
            return await fut
        finally:
            self._waiters.pop(key, None)
            await self._on_status(ev.RUNNING)

    # -- retries --------------------------------------------------------------

    async def retry(self, attempt: int, delay: float, error: str) -> None:
        """Announce a retry; parts streamed by the failed attempt are discarded."""
        batch = self._close_open()
        batch.append(
            ev.event(
                ev.RETRY,
                run_id=self.run_id,
                attempt=attempt,
                delay_ms=round(delay * 1000),
                error=error,
                discard=self.attempt_parts or None,
            )
        )
        self.attempt_parts = []
        await self._append(batch)

    def new_attempt(self) -> None:
        """Parts streamed from here on belong to a new attempt."""
        self.attempt_parts = []

    async def finish(self, status: str = "complete") -> None:
        batch = self._close_open()
        batch.append(
            ev.event(
                ev.MESSAGE_END,
                run_id=self.run_id,
                message_id=self.message_id,
                usage=self.usage or None,
                status=status,
            )
        )
        await self._append(batch)

    async def context_trimmed(self, *, dropped: int, tokens: int, budget: int) -> None:
        """Say that the model is sent the branch without its oldest ``dropped`` messages,
        ``tokens`` by estimate, to fit its context ``budget``."""
        trim = ev.event(
            ev.CONTEXT_TRIM, run_id=self.run_id, dropped=dropped, tokens=tokens, budget=budget
        )
        await self._append([trim])
