"""Following a session's event stream: the logic, without any I/O.

The sync and async clients share these state machines and differ only in how
they read bytes. A follower remembers the offset of the last event it
processed, so a transport that reconnects from ``follower.offset`` sees every
event exactly once; it decides which events belong to a run, folds them into
the run's outcome, and keeps the clocks of the first-event and idle timeouts.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from typing import Any

from tether.client._http import DEFAULT_LIVENESS
from tether.client._sse import SSEEvent
from tether.client.errors import FirstEventTimeout, IdleTimeout, NotFound, StreamTimeout
from tether.client.events import (
    INTERNAL_TYPES,
    Cancel,
    ClientRequest,
    ClientResponse,
    ErrorEvent,
    Event,
    MessageEnd,
    MessageStart,
    PartDelta,
    PartEnd,
    PartStart,
    QueueUpdate,
    Retry,
    RunEnd,
    RunResume,
    RunStart,
    RunSuspend,
    Status,
    Submit,
    ToolApproval,
    ToolResult,
    UserMessage,
    parse_event,
)
from tether.client.models import Part, RunResult, SessionSnapshot, ToolCall

#: The server sends a heartbeat comment on a quiet session stream this often.
HEARTBEAT_INTERVAL = 15.0
_OFFSET = re.compile(r"^(\d+)_(\d+)$")


def offset_key(offset: str | None) -> tuple[int, int] | None:
    """Offsets as comparable numbers (``-1``, the beginning, is before all)."""
    if offset == "-1":
        return (-1, -1)
    m = _OFFSET.match(offset or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


class RunState:
    """One run's outcome, folded from its events (the server's fold, in small)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.message_id: str | None = None
        self.parts: dict[str, Part] = {}
        self.usage: dict[str, Any] | None = None
        self.status: str | None = None
        self.error: dict[str, Any] | None = None
        self.reason: str | None = None
        self.synthesized = False

    def apply(self, ev: Event) -> None:
        handler = _APPLY.get(type(ev))
        if handler is not None:
            handler(self, ev)

    def _message_start(self, ev: MessageStart) -> None:
        self.message_id = self.message_id or ev.message_id

    def _part_start(self, ev: PartStart) -> None:
        if self.message_id is None:
            self.message_id = ev.message_id
        if ev.part_id not in self.parts and ev.message_id == self.message_id:
            self.parts[ev.part_id] = Part(
                ev.part_id, ev.kind, tool_call_id=ev.tool_call_id, tool_name=ev.tool_name
            )

    def _part_delta(self, ev: PartDelta) -> None:
        part = self.parts.get(ev.part_id)
        if part is not None:
            part.text += ev.delta

    def _part_end(self, ev: PartEnd) -> None:
        part = self.parts.get(ev.part_id)
        if part is not None:
            part.done = True
            if "value" in ev.raw:
                part.value = ev.value
            if "text" in ev.raw and isinstance(ev.text, str):
                part.text = ev.text

    def _retry(self, ev: Retry) -> None:
        for part_id in ev.discard:
            self.parts.pop(part_id, None)

    def _message_end(self, ev: MessageEnd) -> None:
        if ev.message_id == self.message_id:
            self.usage = ev.usage if ev.usage is not None else self.usage
            self.status = ev.status or "complete"
            for part in self.parts.values():
                part.done = True

    def _error(self, ev: ErrorEvent) -> None:
        self.error = {"code": ev.code, "message": ev.message}

    def _tool_result(self, ev: ToolResult) -> None:
        part = self._tool_part(ev.tool_call_id)
        if part is not None:
            part.result = ev.output
            part.error = ev.error

    def _tool_approval(self, ev: ToolApproval) -> None:
        part = self._tool_part(ev.tool_call_id)
        if part is not None:
            part.approval = {"approved": bool(ev.approved), "reason": ev.reason}

    def _run_end(self, ev: RunEnd) -> None:
        self.reason = ev.reason
        self.synthesized = ev.synthesized
        if self.status is None and self.message_id is not None:
            self.status = "complete" if ev.reason == "complete" else ev.reason
        for part in self.parts.values():
            part.done = True

    def _tool_part(self, tool_call_id: str) -> Part | None:
        for part in self.parts.values():
            if part.tool_call_id == tool_call_id:
                return part
        return None

    def text(self) -> str:
        return "".join(p.text for p in self.parts.values() if p.kind == "text")

    def result(self) -> RunResult:
        return RunResult(
            run_id=self.run_id,
            reason=self.reason or "interrupted",
            message_id=self.message_id,
            text=self.text(),
            parts=[dataclasses.replace(p) for p in self.parts.values()],
            usage=self.usage,
            error=self.error,
            status=self.status,
            synthesized=self.synthesized,
        )


#: What each event type does to a run's outcome; other types do nothing.
_APPLY: dict[type[Event], Callable[[RunState, Any], None]] = {
    MessageStart: RunState._message_start,
    PartStart: RunState._part_start,
    PartDelta: RunState._part_delta,
    PartEnd: RunState._part_end,
    Retry: RunState._retry,
    MessageEnd: RunState._message_end,
    ErrorEvent: RunState._error,
    ToolResult: RunState._tool_result,
    ToolApproval: RunState._tool_approval,
    RunEnd: RunState._run_end,
}


class Follower:
    """Offset bookkeeping and liveness common to every follower."""

    def __init__(
        self,
        offset: str | None,
        *,
        liveness: float = DEFAULT_LIVENESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.offset = offset or "-1"
        self.liveness = liveness
        self.clock = clock
        self.done = False
        self.connected = False
        #: Offset of a queue-update after which the run may have been dropped.
        self.lookahead: str | None = None
        self._activity = clock()

    # What a transport calls.

    def accept(self, msg: SSEEvent) -> list[Event]:
        if msg.id:
            seen, new = offset_key(self.offset), offset_key(msg.id)
            if seen is not None and new is not None and new <= seen:
                return []  # a replay of what was already processed: never twice
            self.offset = msg.id
        try:
            data = json.loads(msg.data)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        self._activity = self.clock()
        if data.get("type") in INTERNAL_TYPES:
            return []  # the server's bookkeeping (a run's journal): not for callers
        return self.consider(parse_event(data, msg.id))

    def consider(self, ev: Event) -> list[Event]:
        return [ev]

    def touch(self) -> None:
        """The caller had control (handling an event): that time is not idleness."""
        self._activity = max(self._activity, self.clock())

    def deadline(self) -> tuple[float, float, type[StreamTimeout]] | None:
        """``(when, timeout, error class)`` of the next timeout, if one runs."""
        return None

    def check(self) -> None:
        found = self.deadline()
        if found is not None and self.clock() >= found[0]:
            raise self.timeout_error(found[1], found[2])

    def timeout_error(self, timeout: float, cls: type[StreamTimeout]) -> StreamTimeout:
        return cls(f"no event for {timeout:g}s", timeout=timeout)

    def read_timeout(self) -> float:
        """Read timeout for a new connection: liveness, or sooner if a deadline is near."""
        rt = self.liveness
        found = self.deadline()
        if found is not None:
            rt = min(rt, max(found[0] - self.clock(), 0.0) + 0.05)
        return max(rt, 0.05)

    def should_reconnect(self, read_timeout: float) -> bool:
        """True when a deadline will pass before the next heartbeat and the
        connection's read timeout is too long to notice it: reconnecting with a
        shorter one makes the timeout fire on time."""
        found = self.deadline()
        if found is None:
            return False
        remaining = found[0] - self.clock()
        return remaining < HEARTBEAT_INTERVAL and read_timeout - remaining > 1.0

    def gone(self) -> list[Event]:
        """The stream answered 404/410: the session is gone for good."""
        self.done = True
        return []

    def resolve_lookahead(self, next_event: dict[str, Any] | None) -> list[Event]:
        self.lookahead = None
        return []

    def take_tool_calls(self) -> list[ToolCall]:
        return []


class SessionFollower(Follower):
    """Every event of a session, for as long as the session exists."""

    def gone(self) -> list[Event]:
        if not self.connected:
            raise NotFound(404, "not_found", "no such session")
        return super().gone()


class RunFollower(Follower):
    """The events of one run, its outcome, and its timeouts.

    An event belongs to the run when it carries the run's id; the user message
    the run answers (which carries no run id) when its ``message_id`` is the
    run's; a tool result or approval when it answers one of the run's tool
    calls; a cancel of everything while the run is active.
    """

    def __init__(
        self,
        run_id: str,
        message_id: str | None,
        offset: str | None,
        *,
        queued: bool = False,
        known: bool = True,
        first_event_timeout: float | None = 30.0,
        idle_timeout: float | None = 60.0,
        liveness: float = DEFAULT_LIVENESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(offset, liveness=liveness, clock=clock)
        self.run_id = run_id
        self.message_id = message_id
        self.state = RunState(run_id)
        self.first_event_timeout = first_event_timeout
        self.idle_timeout = idle_timeout
        #: The run is known to exist (it came from send/edit/regenerate).
        self.known = known
        self.started = False
        self.active = False
        self.waiting = False
        self.maybe_queued = queued
        self.cancel_named = False
        self._tool_call_ids: set[str] = set()
        #: The run's client requests: their answers are its events.
        self._request_ids: set[str] = set()
        self._approval_needed: set[str] = set()
        self._tool_calls: list[ToolCall] = []

    def consider(self, ev: Event) -> list[Event]:
        if self.done:
            return []
        self._observe(ev)
        if not self._mine(ev):
            return []
        if isinstance(ev, Submit):
            self.maybe_queued = True  # handed to another replica: queued there
        elif not isinstance(ev, Cancel):  # a cancel of a queued run is no sign it started
            self.started = True
            self.lookahead = None
        self.state.apply(ev)
        self._record(ev)
        return [ev]

    def _observe(self, ev: Event) -> None:
        """What the session's events, the run's or not, tell of the run's standing."""
        if isinstance(ev, Status) and self.active:
            self.waiting = ev.status == "paused"
        elif isinstance(ev, QueueUpdate) and not self.started:
            if any(q.get("run_id") == self.run_id for q in ev.queue):
                self.maybe_queued = True
            elif self.maybe_queued:
                # Either the run starts in this very batch (its first event
                # comes right after this one) or it left the queue unrun.
                self.lookahead = ev.offset
        elif isinstance(ev, Cancel) and ev.run_id == self.run_id:
            self.cancel_named = True

    def _record(self, ev: Event) -> None:
        """After the run's own event is folded: activity, tool calls, the end."""
        if isinstance(ev, RunStart):
            self.active = True
        elif isinstance(ev, RunSuspend | RunResume):
            self.active = True
            self.waiting = isinstance(ev, RunSuspend)
        elif isinstance(ev, PartStart) and ev.tool_call_id:
            self._tool_call_ids.add(ev.tool_call_id)
            if ev.needs_approval:
                self._approval_needed.add(ev.part_id)
        elif isinstance(ev, PartEnd):
            part = self.state.parts.get(ev.part_id)
            if part is not None and part.kind == "tool-call" and part.tool_call_id:
                self._tool_calls.append(
                    ToolCall(
                        id=part.tool_call_id,
                        name=part.tool_name or "",
                        arguments=part.value,
                        needs_approval=part.id in self._approval_needed,
                        part_id=part.id,
                    )
                )
        elif isinstance(ev, RunEnd):
            self.done = True
            self.active = False

    def attach(self, snapshot: SessionSnapshot) -> None:
        """Take up the snapshot's active run where the snapshot stands.

        The run has started (no first-event timeout), its answer so far is the
        outcome's beginning, its calls are known (their answers are its
        events), and the calls that wait on a person are handed to
        :meth:`take_tool_calls`; if it waits, the idle clock is stopped.
        """
        run = snapshot.active_run
        if run is None or run.run_id != self.run_id:
            return
        self.started = self.active = True
        self.message_id = self.message_id or run.trigger
        self.waiting = run.suspended is not None or snapshot.status == "paused"
        answer = snapshot.answer()
        if answer is not None:
            self.state.message_id = answer.id
            for part in answer.parts:
                self.state.parts[part.id] = dataclasses.replace(part)
                if part.tool_call_id:
                    self._tool_call_ids.add(part.tool_call_id)
                    if part.needs_approval:
                        self._approval_needed.add(part.id)
        self._tool_calls = snapshot.waiting_calls()
        self._request_ids.update(
            r.request_id for r in snapshot.client_requests if r.run_id == self.run_id
        )

    def _mine(self, ev: Event) -> bool:
        if ev.run_id is not None:
            if isinstance(ev, ClientRequest) and ev.run_id == self.run_id:
                self._request_ids.add(ev.request_id)  # its answer (no run_id) is the run's too
            return ev.run_id == self.run_id
        if isinstance(ev, ClientResponse):
            return ev.request_id in self._request_ids
        if isinstance(ev, UserMessage):
            return self.message_id is not None and ev.message_id == self.message_id
        if isinstance(ev, ToolResult | ToolApproval):
            return ev.tool_call_id in self._tool_call_ids
        if isinstance(ev, Cancel):
            return bool(ev.all) and self.active
        return False

    def take_tool_calls(self) -> list[ToolCall]:
        calls, self._tool_calls = self._tool_calls, []
        return calls

    def deadline(self) -> tuple[float, float, type[StreamTimeout]] | None:
        if self.done:
            return None
        if not self.started:
            if self.first_event_timeout is None:
                return None
            return (
                self._activity + self.first_event_timeout,
                self.first_event_timeout,
                (FirstEventTimeout),
            )
        if self.waiting or self.idle_timeout is None:
            return None
        return self._activity + self.idle_timeout, self.idle_timeout, IdleTimeout

    def timeout_error(self, timeout: float, cls: type[StreamTimeout]) -> StreamTimeout:
        what = "first event" if cls is FirstEventTimeout else "event"
        return cls(
            f"run {self.run_id}: no {what} for {timeout:g}s",
            run_id=self.run_id,
            timeout=timeout,
        )

    def synthesize(self, reason: str) -> list[Event]:
        raw = {"type": "run-end", "run_id": self.run_id, "reason": reason, "synthesized": True}
        ev = RunEnd(
            type="run-end", run_id=self.run_id, reason=reason, synthesized=True,
            offset=self.offset, raw=raw,
        )  # fmt: skip
        self.state.apply(ev)
        self.done = True
        self.active = False
        return [ev]

    def gone(self) -> list[Event]:
        if self.done:
            return []
        if not (self.known or self.connected):
            raise NotFound(404, "not_found", "the run's session does not exist")
        return self.synthesize("interrupted")

    def resolve_lookahead(self, next_event: dict[str, Any] | None) -> list[Event]:
        """Settle a pending queue check with the event right after the queue-update."""
        if self.lookahead is None or self.started:
            self.lookahead = None
            return []
        self.lookahead = None
        if next_event is not None:
            if next_event.get("run_id") == self.run_id:
                return []
            if (
                next_event.get("type") == UserMessage.TYPE
                and self.message_id is not None
                and next_event.get("message_id") == self.message_id
            ):
                return []
        return self.synthesize("cancelled" if self.cancel_named else "interrupted")


def next_data_event(msgs: list[Any], start: int) -> dict[str, Any] | bool | None:
    """The JSON of the first data event in ``msgs[start:]``; False if there is none."""
    for msg in msgs[start:]:
        if isinstance(msg, SSEEvent):
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return False
