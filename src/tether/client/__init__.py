"""The Python SDK of tether.

>>> from tether import Tether
>>> client = Tether()                      # $TETHER_URL, $TETHER_API_KEY
>>> session = client.sessions.create(model="demo")
>>> run = client.send(session.id, "/count 5 10")
>>> for event in run.stream():             # typed events, each exactly once
...     ...
>>> run.text()
'1 2 3 4 5'

``AsyncTether`` is the same API with ``await`` and ``async for``. The
low-level Durable Streams client is in :mod:`tether.client.streams`.
"""

from tether.client._async import AsyncRun, AsyncSessions, AsyncTether
from tether.client._runs import ReadToken
from tether.client._sync import Run, Sessions, Tether
from tether.client.errors import (
    APIError,
    BadRequest,
    Conflict,
    FirstEventTimeout,
    Forbidden,
    Gone,
    IdleTimeout,
    NotFound,
    SeqConflict,
    SequenceGap,
    ServerError,
    SessionNotFound,
    StaleEpoch,
    StreamClosed,
    StreamTimeout,
    TetherConnectionError,
    TetherError,
    Unauthorized,
)
from tether.client.events import (
    Cancel,
    ContextTrim,
    ErrorEvent,
    Event,
    MessageEnd,
    MessageStart,
    PartDelta,
    PartEnd,
    PartStart,
    QueueUpdate,
    Regenerate,
    Retry,
    RunEnd,
    RunResume,
    RunStart,
    RunSuspend,
    Status,
    Submit,
    ToolApproval,
    ToolResult,
    UnknownEvent,
    UserMessage,
    parse_event,
)
from tether.client.models import (
    ActiveRun,
    Message,
    Part,
    QueuedRun,
    RunResult,
    Session,
    SessionSnapshot,
    ToolCall,
)
from tether.client.streams import AsyncProducer, AsyncStreamClient, Producer, StreamClient

__all__ = [
    "APIError",
    "ActiveRun",
    "AsyncProducer",
    "AsyncRun",
    "AsyncSessions",
    "AsyncStreamClient",
    "AsyncTether",
    "BadRequest",
    "Cancel",
    "Conflict",
    "ContextTrim",
    "ErrorEvent",
    "Event",
    "FirstEventTimeout",
    "Forbidden",
    "Gone",
    "IdleTimeout",
    "Message",
    "MessageEnd",
    "MessageStart",
    "NotFound",
    "Part",
    "PartDelta",
    "PartEnd",
    "PartStart",
    "Producer",
    "QueueUpdate",
    "QueuedRun",
    "ReadToken",
    "Regenerate",
    "Retry",
    "Run",
    "RunEnd",
    "RunResult",
    "RunResume",
    "RunStart",
    "RunSuspend",
    "SeqConflict",
    "SequenceGap",
    "ServerError",
    "Session",
    "SessionNotFound",
    "SessionSnapshot",
    "Sessions",
    "StaleEpoch",
    "Status",
    "StreamClient",
    "StreamClosed",
    "StreamTimeout",
    "Submit",
    "Tether",
    "TetherConnectionError",
    "TetherError",
    "ToolApproval",
    "ToolCall",
    "ToolResult",
    "Unauthorized",
    "UnknownEvent",
    "UserMessage",
    "parse_event",
]
