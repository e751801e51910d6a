"""tether: durable transport for AI agent sessions.

Two halves share this namespace. The server side: ``App`` and the agent's
``AgentContext`` (what ``tether serve module:app`` runs). The client side, the
Python SDK: ``Tether`` and ``AsyncTether`` and their types, defined in
:mod:`tether.client` and imported from there on first use, so that a server
(which never touches them) does not pay for importing them. The Durable
Streams client and the SDK's ``ToolCall`` (not the agents' ``ToolCall``
exported here) are in :mod:`tether.client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from tether.agents.app import App
from tether.agents.context import AgentContext
from tether.agents.llm import Reply, Retrying, ServerModel
from tether.providers.base import (
    ChatMessage,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    Usage,
)
from tether.runtime.client_requests import ClientRequestError
from tether.runtime.context import Approval, ToolOutcome

if TYPE_CHECKING:
    from tether.client import (
        ActiveRun,
        APIError,
        AsyncRun,
        AsyncSessions,
        AsyncTether,
        BadRequest,
        Cancel,
        ClientRequest,
        ClientResponse,
        Conflict,
        ContextTrim,
        ErrorEvent,
        Event,
        FirstEventTimeout,
        Forbidden,
        Gone,
        IdleTimeout,
        InputResult,
        Message,
        MessageEnd,
        MessageStart,
        NotFound,
        Part,
        PartDelta,
        PartEnd,
        PartStart,
        PendingRequest,
        QueuedRun,
        QueueUpdate,
        ReadToken,
        Regenerate,
        Retry,
        RpcError,
        RpcRequestInvalid,
        RpcResponse,
        RpcServerError,
        Run,
        RunEnd,
        RunResult,
        RunResume,
        RunStart,
        RunSuspend,
        SeqConflict,
        SequenceGap,
        ServerError,
        Session,
        SessionNotFound,
        Sessions,
        SessionSnapshot,
        SigninResult,
        StaleEpoch,
        Status,
        StreamClosed,
        StreamTimeout,
        Submit,
        Tether,
        TetherConnectionError,
        TetherError,
        ToolApproval,
        ToolResult,
        Toolset,
        Unauthorized,
        UnknownEvent,
        UserMessage,
        parse_event,
    )


def __getattr__(name: str) -> Any:
    """Import the SDK on the first use of one of its names (``from tether import Tether``)."""
    if name not in _SDK:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    import tether.client

    value = getattr(tether.client, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SDK})


__all__ = [
    "APIError",
    "ActiveRun",
    "AgentContext",
    "App",
    "Approval",
    "AsyncRun",
    "AsyncSessions",
    "AsyncTether",
    "BadRequest",
    "Cancel",
    "ChatMessage",
    "ClientRequest",
    "ClientRequestError",
    "ClientResponse",
    "Conflict",
    "ContextTrim",
    "ErrorEvent",
    "Event",
    "FirstEventTimeout",
    "Forbidden",
    "Gone",
    "IdleTimeout",
    "InputResult",
    "Message",
    "MessageEnd",
    "MessageStart",
    "NotFound",
    "Part",
    "PartDelta",
    "PartEnd",
    "PartStart",
    "PendingRequest",
    "QueueUpdate",
    "QueuedRun",
    "ReadToken",
    "ReasoningDelta",
    "Regenerate",
    "Reply",
    "Retry",
    "Retrying",
    "RpcError",
    "RpcRequestInvalid",
    "RpcResponse",
    "RpcServerError",
    "Run",
    "RunEnd",
    "RunResult",
    "RunResume",
    "RunStart",
    "RunSuspend",
    "SeqConflict",
    "SequenceGap",
    "ServerError",
    "ServerModel",
    "Session",
    "SessionNotFound",
    "SessionSnapshot",
    "Sessions",
    "SigninResult",
    "StaleEpoch",
    "Status",
    "StreamClosed",
    "StreamTimeout",
    "Submit",
    "Tether",
    "TetherConnectionError",
    "TetherError",
    "TextDelta",
    "ToolApproval",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallItem",
    "ToolOutcome",
    "ToolResult",
    "Toolset",
    "Unauthorized",
    "UnknownEvent",
    "Usage",
    "UserMessage",
    "__version__",
    "parse_event",
]

#: The SDK's names: in ``__all__``, not defined here, resolved by ``__getattr__``.
_SDK = frozenset(__all__) - set(globals())
