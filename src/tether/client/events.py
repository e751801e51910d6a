"""Typed session events: one dataclass per event type of the session vocabulary.

Every event carries the envelope (``type``, ``id``, ``ts``), the ``offset``
it was read at (the SSE ``id``: resuming from it continues right after this
event), ``run_id`` when it belongs to a run, and ``raw``, the JSON object as
the server sent it. A type this client does not know becomes an
:class:`UnknownEvent`, so a newer server never breaks an older client. The
server's internal bookkeeping (:data:`INTERNAL_TYPES`) is in the log too;
the SDK's followers consume it silently and never hand it to a caller.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    TYPE: ClassVar[str] = ""

    type: str
    id: str | None = None
    ts: float | None = None
    run_id: str | None = None
    #: Stream offset right after this event (resume from here to continue).
    offset: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


# -- inputs: clients -> agent -------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class UserMessage(Event):
    TYPE: ClassVar[str] = "user-message"
    message_id: str = ""
    parent_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    edit_of: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.get("text", "") for p in self.parts if p.get("type", "text") == "text")


@dataclass(frozen=True, kw_only=True, slots=True)
class Regenerate(Event):
    TYPE: ClassVar[str] = "regenerate"
    message_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Cancel(Event):
    TYPE: ClassVar[str] = "cancel"
    #: True when the cancel named no run (it stops whatever is active).
    all: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Submit(Event):
    """A run handed to the replica that runs the session's runs; it has not started."""

    TYPE: ClassVar[str] = "submit"
    kind: str | None = None
    message_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    front: bool | None = None
    parent_id: str | None = None
    edit_of: str | None = None
    retry_of: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolResult(Event):
    TYPE: ClassVar[str] = "tool-result"
    tool_call_id: str = ""
    output: Any = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolApproval(Event):
    TYPE: ClassVar[str] = "tool-approval"
    tool_call_id: str = ""
    approved: bool = False
    reason: str | None = None
    #: The option chosen, when the call offered options (an ACP agent's permission request).
    option_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientResponse(Event):
    """The one answer to a :class:`ClientRequest`: a ``result`` or a JSON-RPC ``error``.

    With neither, the result is null. A run writes one itself (with its
    ``run_id``) when the request timed out.
    """

    TYPE: ClassVar[str] = "client-response"
    request_id: str = ""
    result: Any = None
    #: ``{code, message, data?}`` (JSON-RPC 2.0).
    error: dict[str, Any] | None = None


# -- outputs: agent -> clients --------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStart(Event):
    TYPE: ClassVar[str] = "run-start"
    #: The user message the run answers.
    trigger: str | None = None
    model: str | None = None
    worker: str | None = None
    #: The run this one retries, when a run lost to a crash is started again.
    retry_of: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageStart(Event):
    TYPE: ClassVar[str] = "message-start"
    message_id: str = ""
    role: str = "assistant"
    parent_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PartStart(Event):
    TYPE: ClassVar[str] = "part-start"
    message_id: str = ""
    part_id: str = ""
    #: text, reasoning, tool-call, tool-result, source or file.
    kind: str = "text"
    tool_call_id: str | None = None
    tool_name: str | None = None
    needs_approval: bool | None = None
    #: A tool call's arguments when they were whole before it opened (an agent's
    #: ``ctx.tool_call``); None while a model streams them: its ``PartEnd.value`` has them.
    arguments: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PartDelta(Event):
    TYPE: ClassVar[str] = "part-delta"
    part_id: str = ""
    delta: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PartEnd(Event):
    TYPE: ClassVar[str] = "part-end"
    part_id: str = ""
    #: Final structured value (a tool call's arguments, a source, a file...).
    value: Any = None
    #: Final text, when the producer restates it.
    text: str | None = None
    #: A reasoning part: the upstream's signature of it.
    signature: str | None = None
    #: A reasoning part the upstream gave encrypted (Anthropic's redacted_thinking data).
    redacted: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageEnd(Event):
    TYPE: ClassVar[str] = "message-end"
    message_id: str = ""
    usage: dict[str, Any] | None = None
    status: str | None = None
    #: Why the agent stopped, when not simply done (an ACP agent's ``max_tokens``, ``refusal``).
    stop_reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry(Event):
    TYPE: ClassVar[str] = "retry"
    attempt: int | None = None
    delay_ms: int | None = None
    error: str | None = None
    #: Parts streamed by the failed attempt; they are to be dropped.
    discard: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class ContextTrim(Event):
    """The run sent its model the branch without the oldest messages, to fit a budget."""

    TYPE: ClassVar[str] = "context-trim"
    #: Messages of the branch left out, oldest first.
    dropped: int = 0
    #: The estimated tokens of what was sent.
    tokens: int | None = None
    #: The model's context budget (tokens).
    budget: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorEvent(Event):
    """The ``error`` event (named so as not to be mistaken for an exception)."""

    TYPE: ClassVar[str] = "error"
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunEnd(Event):
    TYPE: ClassVar[str] = "run-end"
    #: complete, cancelled, error or interrupted.
    reason: str = "complete"
    #: True when the client made this event up because the server ended the
    #: stream for good without one (the session was deleted, say).
    synthesized: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSuspend(Event):
    """The run waits on a person and holds no task on the server; it is still active.

    It may stay so for hours: the answer (from any client, on any replica,
    after restarts) resumes the same run, announced by a :class:`RunResume`.
    """

    TYPE: ClassVar[str] = "run-suspend"
    #: What it waits for: ``{tool_call_id, for: "result" | "approval", expires_at?}``,
    #: or ``{request_id, for: "request", expires_at?}``.
    waiting: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResume(Event):
    """The same run continues (after an answer, a restart or a failover)."""

    TYPE: ClassVar[str] = "run-resume"
    #: The process that continues it.
    worker: str | None = None
    #: How many steps of its journal it replayed (recorded, not executed again).
    replayed: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Journal(Event):
    """One completed step of a run, recorded so that the run can continue without
    doing it again: the server's bookkeeping. Typed for completeness; followers
    never yield it (:data:`INTERNAL_TYPES`)."""

    TYPE: ClassVar[str] = "journal"
    #: model, call or step.
    op: str = ""
    key: str = ""
    value: Any = None
    #: How many parts of the answer the step wrote.
    parts: int = 0
    fingerprint: str | None = None


# -- session state ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Status(Event):
    TYPE: ClassVar[str] = "status"
    #: idle, running, paused (a run waits on a person) or error (the last run failed).
    status: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueUpdate(Event):
    TYPE: ClassVar[str] = "queue-update"
    queue: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class ActiveBranch(Event):
    TYPE: ClassVar[str] = "active-branch"
    #: The message the session's current branch now ends at (a client chose it).
    message_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientRequest(Event):
    """A JSON-RPC request for the session's clients (the client channel): answer it
    with ``respond`` (or serve it with ``serve_requests``)."""

    TYPE: ClassVar[str] = "client-request"
    request_id: str = ""
    method: str = ""
    params: Any = None
    #: When a run stops waiting for it (seconds since the epoch), if it said.
    expires_at: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownEvent(Event):
    """An event type this client does not know; its fields are in ``raw``."""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        UserMessage,
        Regenerate,
        Cancel,
        Submit,
        ToolResult,
        ToolApproval,
        ClientResponse,
        RunStart,
        MessageStart,
        PartStart,
        PartDelta,
        PartEnd,
        MessageEnd,
        Retry,
        ContextTrim,
        ErrorEvent,
        RunEnd,
        RunSuspend,
        RunResume,
        Journal,
        Status,
        QueueUpdate,
        ActiveBranch,
        ClientRequest,
    )
}

#: Event types that are the server's own bookkeeping: never yielded by a follower.
INTERNAL_TYPES: frozenset[str] = frozenset({Journal.TYPE})

_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _fields(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("offset", "raw"))
        _FIELDS[cls] = names
    return names


def parse_event(data: dict[str, Any], offset: str | None = None) -> Event:
    """The typed event for a decoded JSON object."""
    kind = data.get("type")
    kind = kind if isinstance(kind, str) else ""
    cls = EVENT_TYPES.get(kind, UnknownEvent)
    kwargs = {name: data[name] for name in _fields(cls) if name in data and data[name] is not None}
    kwargs["type"] = kind
    try:
        return cls(offset=offset, raw=data, **kwargs)
    except TypeError:
        return UnknownEvent(
            type=kind, id=data.get("id"), run_id=data.get("run_id"), offset=offset, raw=data
        )
