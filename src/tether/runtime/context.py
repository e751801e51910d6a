"""What an agent sees of a run: history in, text / reasoning / tool calls out.

Agents never touch the transport. Every call here appends events to the
session's stream; the runtime owns the run's beginning and its one end.
Steps with an outcome are journaled as they complete, and a run that
continues replays them (tether.runtime.journal): while it replays, what the
agent streams is not written again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tether.observability import metrics, tracing
from tether.observability.runs import LEDGER
from tether.runtime import client_requests as rpc
from tether.runtime.journal import RULE, Journal, ReplayDiverged, Resumption
from tether.sessions import events as ev
from tether.sessions.fold import Message

AppendFn = Callable[[list[ev.Event]], Awaitable[int]]
T = TypeVar("T")


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
    #: The option chosen, when the call offered options (an ACP agent's permission request).
    option_id: str | None = None


def refusal(verdict: Approval) -> str:
    """The error a refused call's result carries."""
    return f"not approved: {verdict.reason or 'refused'}"


def value_of(arguments: dict[str, Any] | str) -> Any:
    """Arguments as the part's value: parsed when they are JSON text, else the text."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class RunContext:
    def __init__(
        self,
        *,
        session_id: str,
        run_id: str,
        message_id: str,
        model_name: str | None,
        system: str | None,
        history: list[Message],
        tools: list[Any] | None = None,
        append: AppendFn,
        waiters: dict[str, asyncio.Future[Any]],
        on_status: Callable[[str], Awaitable[None]],
        on_wait: Callable[[], None] | None = None,
        on_step: Callable[[], None] | None = None,
        resumption: Resumption | None = None,
        wait_expiry: float | None = None,
        expire_request: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self.message_id = message_id
        #: The session's model (``openai/gpt-4o-mini``), None for an agent's session.
        self.model_name = model_name
        self.system = system
        #: The current branch up to and including the message being answered.
        self.history = history
        #: The tools declared for this run: the session's, then its message's
        #: (server tools' names and client tools' definitions).
        self.declared_tools: list[Any] = tools or []
        self._write = append
        #: Events held to be written in one append (see :meth:`hold`), or None.
        self._held: list[ev.Event] | None = None
        self._waiters = waiters
        self._on_status = on_status
        self._on_wait = on_wait
        self._on_step = on_step
        self._open: dict[str, str] = {}  # kind -> open part id
        self._parts = 0
        self._calls = 0
        self._requests = 0  # client requests made (their ids number them)
        #: Tool call id -> the tool's name, for the spans of the calls waited for.
        self._tool_names: dict[str, str] = {}
        self._waiting = 0  # waits open at once (parallel tool calls)
        self.attempt_parts: list[str] = []
        self.usage: dict[str, int] = {}
        #: Why the agent stopped, when not simply done (an ACP agent's ``max_tokens``,
        #: ``refusal``): the message-end says it.
        self.stop_reason: str | None = None
        resumption = resumption or Resumption()
        self.journal = Journal(run_id, resumption.entries)
        self._last_part = resumption.last_part
        self._expiries = resumption.expiries
        self._outcomes = resumption.outcomes
        if not self.journal.replaying:
            self._go_live()
        #: Seconds a wait may last before the run ends as expired, unless a wait says.
        self.wait_expiry = wait_expiry
        #: Writes a timed client request's timeout as its answer and hands it to the
        #: wait: the runtime's hook does so once, under the answer's claim.
        self._expire_request = expire_request or self._expire_unclaimed
        #: Open waits: key (``result:{call}``, ``approval:{call}``) -> when it expires.
        self.waits: dict[str, float | None] = {}
        #: Steps in progress that are not waits (a model call, a server tool, a ctx.step).
        self.busy = 0

    # -- writing -----------------------------------------------------------------

    async def _append(self, events: list[ev.Event]) -> None:
        """Write what the agent streams (not while replaying: the log has it)."""
        if not self.journal.replaying:
            await self._record(events)

    async def _record(self, events: list[ev.Event]) -> None:
        if self._held is not None:
            self._held.extend(events)
        else:
            await self._write(events)

    @property
    def replaying(self) -> bool:
        """The run re-executes steps its journal holds (it continues after going away)."""
        return self.journal.replaying

    @property
    def quiescent(self) -> bool:
        """Everything the run does is waiting on a person: it may be suspended."""
        return bool(self.waits) and self.busy == 0

    def begin_step(self) -> None:
        """A step that is not a wait starts (a model call, a tool, a ctx.step).

        The runtime may refuse it: a server shutting down starts no new step
        (the run stops there, to go on from its journal on the next start).
        """
        if self._on_step is not None:
            self._on_step()
        self.busy += 1

    def end_step(self) -> None:
        self.busy -= 1
        if self.quiescent and self._on_wait is not None:
            self._on_wait()  # what is left only waits: the run may be suspended

    # -- the journal -----------------------------------------------------------

    def replayed(self, key: str, fingerprint: str | None = None) -> ev.Event | None:
        """The journal entry of step ``key`` if it is replayed (see journal.Journal.take)."""
        entry = self.journal.take(key, fingerprint)
        if entry is not None:
            self._parts = max(self._parts, entry.get("parts", 0))
            self._open.clear()  # a step's entry closed what was open
            if not self.journal.replaying:
                self._go_live()
        return entry

    def _go_live(self) -> None:
        """The replay is over: new parts are numbered after every part the message had."""
        self._open.clear()
        self._parts = max(self._parts, self._last_part)

    async def journaled(
        self, op: str, key: str, value: Any, fingerprint: str | None = None
    ) -> None:
        """Record step ``key`` as complete, closing what is open (its output is whole)."""
        batch = self._close_open()
        batch.append(self.journal.entry(op, key, value, self._parts, fingerprint))
        await self._record(batch)

    async def step(self, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run a side effect once: its (JSON) result is journaled, and a replay returns it.

        Whatever an agent does outside ``ctx`` (an HTTP call, a write) is done
        again when its run continues after a restart; done through ``step``,
        it is done once.
        """
        key = self.journal.key(f"step:{name}")
        entry = self.replayed(key)
        if entry is not None:
            recorded: T = entry.get("value")  # type: ignore[assignment]
            return recorded
        self.begin_step()
        try:
            value = await fn()
        finally:
            self.end_step()
        await self.journaled("step", key, value)
        return value

    def recorded_outcome(self, call_id: str) -> ToolOutcome | None:
        """The result the log held for tool call ``call_id`` when this execution began.

        For whoever runs tools itself (an adapter): a continued run must not
        run a tool whose result is recorded.
        """
        found = self._outcomes.get(call_id)
        return None if found is None else ToolOutcome(*found)

    def hold(self) -> None:
        """Hold what is streamed from now on, to be written by :meth:`release` in one append.

        For output that arrived together (a model's chunks read at once): one
        append and one write to each reader instead of one per piece.
        """
        if self._held is None:
            self._held = []

    async def release(self) -> None:
        """Write what :meth:`hold` held, in one append."""
        held, self._held = self._held, None
        if held:
            await self._write(held)

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
            LEDGER.first_token(self.run_id)  # once per part, not per delta: O(1) per run
            batch.extend(self._close_open())
            part_id, start = self._start_part(kind)
            self._open[kind] = part_id
            batch.append(start)
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

    async def reasoning_signature(self, signature: str) -> None:
        """End the reasoning part with the upstream's signature of it (its part-end has it).

        An upstream that signs its reasoning wants it back, signed, in a later
        turn; a client that holds the conversation (the Messages front) gets it.
        """
        part_id = self._open.pop(ev.REASONING, None)
        batch: list[ev.Event] = []
        if part_id is None:  # signed reasoning with no visible text
            batch.extend(self._close_open())
            part_id = self._reasoning_part()
            batch.append(self._reasoning_start(part_id))
        batch.append(
            ev.event(ev.PART_END, run_id=self.run_id, part_id=part_id, signature=signature)
        )
        await self._append(batch)

    async def redacted_reasoning(self, data: str) -> None:
        """A reasoning part the upstream gave encrypted: no deltas; its part-end has the data."""
        batch = self._close_open()
        part_id = self._reasoning_part()
        batch.append(self._reasoning_start(part_id))
        batch.append(ev.event(ev.PART_END, run_id=self.run_id, part_id=part_id, redacted=data))
        await self._append(batch)

    def _reasoning_part(self) -> str:
        part_id = self._part_id()
        self.attempt_parts.append(part_id)
        return part_id

    def _reasoning_start(self, part_id: str) -> ev.Event:
        return ev.event(
            ev.PART_START,
            run_id=self.run_id,
            message_id=self.message_id,
            part_id=part_id,
            kind=ev.REASONING,
        )

    async def part(self, kind: str, value: Any) -> None:
        """A part given whole (an ACP agent's plan): its start, and its end with ``value``."""
        batch = self._close_open()
        part_id, start = self._start_part(kind)
        batch.append(start)
        batch.append(ev.event(ev.PART_END, run_id=self.run_id, part_id=part_id, value=value))
        await self._append(batch)

    def _start_part(self, kind: str) -> tuple[str, ev.Event]:
        """A new part of this attempt: its id and its part-start event."""
        part_id = self._part_id()
        self.attempt_parts.append(part_id)
        start = ev.event(
            ev.PART_START,
            run_id=self.run_id,
            message_id=self.message_id,
            part_id=part_id,
            kind=kind,
        )
        return part_id, start

    async def add_usage(self, **counts: int) -> None:
        for key, n in counts.items():
            self.usage[key] = self.usage.get(key, 0) + n

    # -- tools ----------------------------------------------------------------

    def _call_opened(
        self, call_id: str, name: str, approval: bool, arguments: Any = None
    ) -> tuple[str, list[ev.Event]]:
        """A new tool-call part's id, and the events that open it (closing what is open).

        ``arguments``: the call's whole arguments when they are known before it
        opens (a placed call), so that a client sees them with its name.
        """
        part_id = self._part_id()
        self._tool_names[call_id] = name
        batch = self._close_open()
        batch.append(
            ev.event(
                ev.PART_START,
                run_id=self.run_id,
                message_id=self.message_id,
                part_id=part_id,
                kind=ev.TOOL_CALL,
                tool_call_id=call_id,
                tool_name=name,
                needs_approval=approval or None,
                arguments=arguments,
            )
        )
        return part_id, batch

    async def tool_call_start(self, call_id: str, name: str, *, approval: bool = False) -> str:
        """Open a tool-call part whose arguments stream next; returns the part's id."""
        part_id, batch = self._call_opened(call_id, name, approval)
        self.attempt_parts.append(part_id)
        await self._append(batch)
        return part_id

    async def tool_call_delta(self, part_id: str, arguments: str) -> None:
        """Stream a piece of an open tool call's JSON arguments."""
        if arguments:
            await self._append(
                [ev.event(ev.PART_DELTA, run_id=self.run_id, part_id=part_id, delta=arguments)]
            )

    async def tool_call_end(self, part_id: str, arguments: dict[str, Any] | str) -> None:
        """Close a tool call with its whole arguments (parsed, when they are JSON)."""
        await self._append(
            [ev.event(ev.PART_END, run_id=self.run_id, part_id=part_id, value=value_of(arguments))]
        )

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
        key = f"call:{call_id}"
        entry = self.replayed(key)
        if entry is not None:
            self._tool_names[call_id] = name
            if entry.get("value") != name:
                raise ReplayDiverged(
                    f"run {self.run_id} cannot continue: on replay {call_id} calls {name}, "
                    f"recorded as {entry.get('value')}; {RULE}"
                )
            return call_id
        value = value_of(arguments)
        part_id, batch = self._call_opened(call_id, name, approval, value)
        batch.append(ev.event(ev.PART_END, run_id=self.run_id, part_id=part_id, value=value))
        batch.append(self.journal.entry("call", key, name, self._parts))
        await self._record(batch)
        return call_id

    async def tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        call_id: str | None = None,
        approval: bool = False,
        expires_in: float | None = None,
    ) -> ToolOutcome:
        """Ask a client to run tool ``name`` and wait for its result.

        With ``approval=True`` a client must first approve the call; a refusal
        comes back as an error outcome without the tool running. ``expires_in``:
        see :meth:`wait_result`.
        """
        call_id = await self.place_tool_call(name, arguments, call_id=call_id, approval=approval)
        if approval:
            verdict = await self.wait_approval(call_id, expires_in=expires_in)
            if not verdict.approved:
                return ToolOutcome(error=refusal(verdict))
        return await self.wait_result(call_id, expires_in=expires_in)

    async def wait_result(self, call_id: str, *, expires_in: float | None = None) -> ToolOutcome:
        """Wait until a client posts the result of tool call ``call_id``.

        A wait that outlasts ``expires_in`` seconds (default: the server's
        ``--wait-expiry``, none unless set) ends the run as an error.
        """
        name = self._tool_names.get(call_id)
        with tracing.tool_call(name, call_id, tracing.CLIENT_TOOL) as traced:
            outcome: ToolOutcome = await self._wait(f"result:{call_id}", expires_in)
            traced.result(outcome.output, outcome.error)
        return outcome

    async def wait_approval(self, call_id: str, *, expires_in: float | None = None) -> Approval:
        """Wait until a client approves or refuses tool call ``call_id`` (see wait_result)."""
        verdict: Approval = await self._wait(f"approval:{call_id}", expires_in)
        return verdict

    async def tool_result(self, call_id: str, outcome: ToolOutcome) -> None:
        """Record the outcome of a call the server ran, as a client's result is recorded.

        Written even while replaying: a tool that ran now has no result in the log yet.
        """
        await self._record(
            [
                ev.event(
                    ev.TOOL_RESULT,
                    run_id=self.run_id,
                    tool_call_id=call_id,
                    output=outcome.output if outcome.ok else None,
                    error=outcome.error,
                )
            ]
        )

    async def _wait(self, key: str, expires_in: float | None) -> Any:
        """Await an answer; the session is ``paused`` while any wait of the run is open.

        A run whose every step waits may be suspended (its task stopped, the
        waits recorded in the log) and continued when an answer comes.
        """
        fut = self._waiters.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[key] = fut
        if fut.done():  # already answered: no need to say we wait
            self._waiters.pop(key, None)
            return fut.result()
        expires_in = self.wait_expiry if expires_in is None else expires_in
        expires_at = self._expiries.get(key)
        if expires_at is None and expires_in is not None:
            expires_at = round(time.time() + expires_in, 3)
        self.waits[key] = expires_at
        self._waiting += 1
        try:
            if self._waiting == 1:
                await self._on_status(ev.PAUSED)
            if self._on_wait is not None:
                self._on_wait()
            return await fut
        finally:
            self._waiters.pop(key, None)
            self.waits.pop(key, None)
            self._waiting -= 1
            if self._waiting == 0:
                await self._on_status(ev.RUNNING)

    # -- the client channel ------------------------------------------------------

    async def request_client(
        self, method: str, params: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Ask the session's connected clients to act (JSON-RPC): the result of the first answer.

        Raises :class:`~tether.runtime.client_requests.ClientRequestError` when
        the answer is a JSON-RPC error, or when nobody answered within
        ``timeout`` seconds (code ``TIMED_OUT``). Without a timeout the wait is
        a wait like a tool call's: the run may be suspended meanwhile, and the
        server's ``--wait-expiry`` ends it. The session is ``paused`` while it waits.
        """
        self._requests += 1
        request_id = f"req_{self.run_id}_{self._requests}"
        key = f"request:{request_id}"
        entry = self.replayed(key)
        if entry is not None:
            recorded = entry.get("value") or {}
            if recorded.get("method") != method:
                raise ReplayDiverged(
                    f"run {self.run_id} cannot continue: on replay {request_id} asks "
                    f"{method}, recorded as {recorded.get('method')}; {RULE}"
                )
            expires_at = recorded.get("expires_at")
        else:
            expires_at = None if timeout is None else round(time.time() + timeout, 3)
            batch = self._close_open()
            batch.append(
                ev.event(
                    ev.CLIENT_REQUEST, run_id=self.run_id, request_id=request_id,
                    method=method, params=params, expires_at=expires_at,
                )
            )  # fmt: skip
            journaled: dict[str, Any] = {"method": method}
            if expires_at is not None:
                journaled["expires_at"] = expires_at
            batch.append(self.journal.entry("request", key, journaled, self._parts))
            await self._record(batch)
        if expires_at is None:
            answer: dict[str, Any] = await self._wait(key, None)
        else:
            answer = await self._timed_wait(key, request_id, expires_at, timeout)
        return rpc.outcome(answer)

    async def _timed_wait(
        self, key: str, request_id: str, expires_at: float, timeout: float | None
    ) -> dict[str, Any]:
        """Wait for an answer until ``expires_at``; then the run answers the timeout itself.

        A timed wait keeps its task (the run is not suspended): the timeout is
        the agent's to see, not the end of the run. It is written to the log
        before the wait ends, so every client sees the request closed.
        """
        self._expiries[key] = expires_at
        fut = self._waiters.get(key)
        if fut is None:
            fut = self._waiters[key] = asyncio.get_running_loop().create_future()
        self.busy += 1
        waiting = asyncio.ensure_future(self._wait(key, None))
        try:
            done, _ = await asyncio.wait({waiting}, timeout=max(0.0, expires_at - time.time()))
            if not done and not fut.done():
                await self._expire_request(request_id, rpc.timed_out(timeout))
            answer: dict[str, Any] = await waiting
            return answer
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
            self.busy -= 1

    async def _expire_unclaimed(self, request_id: str, error: dict[str, Any]) -> None:
        """A timed request's timeout, for a context made without the runtime's hook."""
        answer = ev.event(
            ev.CLIENT_RESPONSE, run_id=self.run_id, request_id=request_id, error=error
        )
        await self._record([answer])
        fut = self._waiters.get(f"request:{request_id}")
        if fut is not None and not fut.done():
            fut.set_result({"error": error})

    # -- retries --------------------------------------------------------------

    async def retry(self, attempt: int, delay: float, error: str) -> None:
        """Announce a retry; parts streamed by the failed attempt are discarded."""
        metrics.upstream_retried(error)
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
                stop_reason=self.stop_reason,
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
