"""Typed views of the session API's JSON: sessions, snapshots, messages, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Part:
    id: str
    #: text, reasoning, tool-call, tool-result, source or file.
    kind: str
    done: bool = False
    text: str = ""
    value: Any = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    result: Any = None
    error: str | None = None
    #: ``{"approved": bool, "reason": str | None}`` once a tool call was answered.
    approval: dict[str, Any] | None = None
    #: A tool call a person must approve before it runs.
    needs_approval: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Part:
        return cls(
            id=d.get("id", ""),
            kind=d.get("kind", "text"),
            done=bool(d.get("done", False)),
            text=d.get("text", "") or "",
            value=d.get("value"),
            tool_call_id=d.get("tool_call_id"),
            tool_name=d.get("tool_name"),
            result=d.get("result"),
            error=d.get("error"),
            approval=d.get("approval"),
            needs_approval=bool(d.get("needs_approval", False)),
        )


@dataclass(slots=True)
class Message:
    id: str
    role: str
    parent_id: str | None
    #: streaming, complete, cancelled, error or interrupted.
    status: str
    parts: list[Part] = field(default_factory=list)
    #: Ids of the versions of this message (itself included), oldest first.
    siblings: list[str] = field(default_factory=list)
    run_id: str | None = None
    usage: dict[str, Any] | None = None
    edit_of: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.kind == "text")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Message:
        return cls(
            id=d["id"],
            role=d.get("role", ""),
            parent_id=d.get("parent_id"),
            status=d.get("status", "complete"),
            parts=[Part.from_json(p) for p in d.get("parts", [])],
            siblings=list(d.get("siblings", [])),
            run_id=d.get("run_id"),
            usage=d.get("usage"),
            edit_of=d.get("edit_of"),
        )


@dataclass(slots=True)
class ActiveRun:
    run_id: str
    trigger: str | None = None
    model: str | None = None
    started_at: float | None = None
    #: While the run is suspended (it waits on a person, holding no task): what
    #: it waits for, ``{tool_call_id, for: "result" | "approval", expires_at?}``.
    suspended: list[dict[str, Any]] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ActiveRun:
        return cls(
            d["run_id"], d.get("trigger"), d.get("model"), d.get("started_at"), d.get("suspended")
        )


@dataclass(slots=True)
class PendingRequest:
    """A client request of the session (the client channel), answered or not.

    Once ``answered``: ``error`` (a JSON-RPC error) or, if None, ``result``.
    """

    request_id: str
    method: str
    params: Any = None
    answered: bool = False
    result: Any = None
    error: dict[str, Any] | None = None
    #: The run that asked (None: a backend, through ``interact``), and its answer's message.
    run_id: str | None = None
    message_id: str | None = None
    expires_at: float | None = None

    def answerable(self, active_run: ActiveRun | None) -> bool:
        """Unanswered, and a backend's or the active run's (a run that ended waits no more)."""
        if self.answered:
            return False
        return self.run_id is None or (active_run is not None and active_run.run_id == self.run_id)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PendingRequest:
        return cls(
            d["request_id"], d.get("method") or "", d.get("params"), bool(d.get("answered")),
            d.get("result"), d.get("error"), d.get("run_id"), d.get("message_id"),
            d.get("expires_at"),
        )  # fmt: skip


@dataclass(slots=True)
class QueuedRun:
    run_id: str
    #: message (a user message waits to be placed and answered) or regenerate.
    kind: str
    message_id: str
    parts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueuedRun:
        return cls(
            d["run_id"], d.get("kind", "message"), d.get("message_id", ""), d.get("parts", [])
        )


@dataclass(slots=True)
class Session:
    id: str
    title: str
    model: str | None = None
    agent: str | None = None
    system: str | None = None
    #: idle, running, paused (a run waits on a person), error (the last run failed) or
    #: waiting (a run waits for a tether worker: none serves its agent now).
    status: str | None = None
    archived: bool = False
    created_at: float | None = None
    updated_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The tools its runs may call: server tools' names, client tools' definitions.
    tools: list[Any] = field(default_factory=list)
    #: Path of the session's event stream as a plain Durable Stream.
    stream_url: str | None = None
    #: Token counts of every answer in the session so far, summed (all branches).
    usage: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Session:
        return cls(**_session_kwargs(d))


@dataclass(slots=True)
class SessionSnapshot(Session):
    """A session's conversation, complete up to ``offset``.

    Following the session's events from ``offset`` on gives exactly what came
    after the snapshot, nothing twice.
    """

    #: The current branch, root first.
    messages: list[Message] = field(default_factory=list)
    active_run: ActiveRun | None = None
    queue: list[QueuedRun] = field(default_factory=list)
    last_error: dict[str, Any] | None = None
    offset: str = "-1"
    #: The client requests the session made (the client channel), oldest first.
    client_requests: list[PendingRequest] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionSnapshot:
        active = d.get("active_run")
        return cls(
            **_session_kwargs(d),
            messages=[Message.from_json(m) for m in d.get("messages", [])],
            active_run=ActiveRun.from_json(active) if active else None,
            queue=[QueuedRun.from_json(q) for q in d.get("queue", [])],
            last_error=d.get("last_error"),
            offset=d.get("offset", "-1"),
            client_requests=[PendingRequest.from_json(r) for r in d.get("client_requests", [])],
        )

    def answer(self) -> Message | None:
        """The active run's answer so far (None when no run is active or it has not begun)."""
        run = self.active_run
        if run is None:
            return None
        return next((m for m in self.messages if m.run_id == run.run_id), None)

    def waiting_calls(self) -> list[ToolCall]:
        """The active run's tool calls that wait on a person now.

        ``needs_approval`` says what is waited for: True, its approval; False,
        its result (a call that was approved and now waits for its result has
        False). A suspended run says what it waits for; a run that waits live
        (status ``paused``) is read from its calls: those ended with no result
        and no refusal, which may include a tool the server runs itself while
        it runs (a caller that knows the server's tools leaves those out).
        """
        run, answer = self.active_run, self.answer()
        calls = {p.tool_call_id: p for p in answer.parts if p.tool_call_id} if answer else {}
        if run is not None and run.suspended is not None:
            waits = [(w["tool_call_id"], w.get("for") == "approval") for w in run.suspended]
            return [_waiting(call_id, calls.get(call_id), approval) for call_id, approval in waits]
        if self.status != "paused":
            return []
        return [
            _waiting(call_id, part, part.needs_approval and part.approval is None)
            for call_id, part in calls.items()
            if part.kind == "tool-call" and part.done and part.result is None
            and part.error is None and (part.approval is None or part.approval.get("approved"))
        ]  # fmt: skip


def _waiting(call_id: str, part: Part | None, approval: bool) -> ToolCall:
    """A waiting call as a handler gets it; ``part`` is None if the snapshot lacks it."""
    return ToolCall(
        id=call_id,
        name=(part.tool_name or "") if part else "",
        arguments=part.value if part else None,
        needs_approval=approval,
        part_id=part.id if part else None,
    )


def _session_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": d["id"],
        "title": d.get("title", ""),
        "model": d.get("model"),
        "agent": d.get("agent"),
        "system": d.get("system"),
        "status": d.get("status"),
        "archived": bool(d.get("archived", False)),
        "created_at": d.get("created_at"),
        "updated_at": d.get("updated_at"),
        "metadata": d.get("metadata") or {},
        "tools": d.get("tools") or [],
        "stream_url": d.get("stream_url"),
        "usage": d.get("usage") or {},
        "raw": d,
    }


@dataclass(slots=True)
class ToolCall:
    """A tool call the agent made, as handed to a tool handler."""

    id: str
    name: str
    #: The parsed arguments (usually a dict).
    arguments: Any
    needs_approval: bool = False
    part_id: str | None = None


@dataclass(slots=True)
class RunResult:
    """How a run ended and what it produced."""

    run_id: str
    #: complete, cancelled, error or interrupted.
    reason: str
    #: The assistant message the run wrote (None if it never started one).
    message_id: str | None = None
    #: Final text of the assistant message (its text parts, retries discarded).
    text: str = ""
    parts: list[Part] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    #: ``{"code", "message"}`` of the run's error event, if it had one.
    error: dict[str, Any] | None = None
    #: The assistant message's final status (complete, cancelled, error, ...).
    status: str | None = None
    #: True when the run-end was made up by the client (see ``RunEnd.synthesized``).
    synthesized: bool = False

    @property
    def ok(self) -> bool:
        return self.reason == "complete"
