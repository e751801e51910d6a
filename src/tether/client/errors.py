"""Exceptions raised by the tether client.

Every exception is a :class:`TetherError`. HTTP answers of 4xx and 5xx become
:class:`APIError` subclasses carrying the server's ``{"error": {"code",
"message"}}``. No exception's message or repr ever contains the API key: the
key travels only in the ``Authorization`` header, which is never quoted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class TetherError(Exception):
    """Base class of everything the client raises."""


class TetherConnectionError(TetherError):
    """The server could not be reached (or the connection broke) and retrying did not help."""


class StreamTimeout(TetherError):
    """A run's event stream saw no progress for too long."""

    def __init__(self, message: str, *, run_id: str | None = None, timeout: float) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.timeout = timeout


class FirstEventTimeout(StreamTimeout):
    """The run's first event did not arrive in time (see ``Run.stream``)."""


class IdleTimeout(StreamTimeout):
    """The run went quiet for too long after its first event (see ``Run.stream``)."""


class APIError(TetherError):
    """The server answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        where = f" ({method} {url})" if method and url else ""
        super().__init__(f"{status} {code}: {message}{where}")
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        #: Response headers (lower-cased names); they never contain the API key.
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code!r}, "
            f"message={self.message!r})"
        )


class BadRequest(APIError):
    """400, 413 or 422: the request was malformed or invalid."""


class Unauthorized(APIError):
    """401: missing or invalid API key (or read token)."""


class Forbidden(APIError):
    """403."""


class NotFound(APIError):
    """404: no such session, message, run or stream (or not visible to this key)."""


class SessionNotFound(NotFound):
    """404: no session of this id, or none this API key may see (the server does not say which)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(404, "not_found", f"session {session_id!r} does not exist")
        self.session_id = session_id

    def __str__(self) -> str:
        return f"session {self.session_id!r} does not exist (or this key cannot see it)"


class Gone(NotFound):
    """410: the stream was deleted or expired."""


class Conflict(APIError):
    """409: valid, but clashes with the current state."""


class ServerError(APIError):
    """5xx."""


class StaleEpoch(Forbidden):
    """403 from an idempotent producer whose epoch was superseded (fenced)."""

    @property
    def current_epoch(self) -> int | None:
        raw = self.headers.get("producer-epoch")
        return int(raw) if raw and raw.isdigit() else None


class SequenceGap(Conflict):
    """409: a producer's sequence number skipped ahead of what the server expects."""

    @property
    def expected_seq(self) -> int | None:
        raw = self.headers.get("producer-expected-seq")
        return int(raw) if raw and raw.isdigit() else None

    @property
    def received_seq(self) -> int | None:
        raw = self.headers.get("producer-received-seq")
        return int(raw) if raw and raw.isdigit() else None


class StreamClosed(Conflict):
    """409: the stream is closed and takes no more appends."""


class SeqConflict(Conflict):
    """409: a ``Stream-Seq`` that is not greater than the stream's last one."""


class RpcError(TetherError):
    """A JSON-RPC error answered to a client request (the client channel).

    ``code``, ``message`` and ``data`` are the JSON-RPC error's. A handler of
    ``serve_requests`` may raise one to answer with that error.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC error {code})")
        self.code = code
        self.message = message
        self.data = data


class RpcServerError(RpcError):
    """A JSON-RPC error with id null: the server refused the call as a whole (a malformed batch)."""


class RpcRequestInvalid(TetherError, ValueError):
    """A request the SDK will not send: one without an id (a notification) is never answered."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: BadRequest,
    422: BadRequest,
}
_BY_CODE: dict[str, type[APIError]] = {
    "stale_epoch": StaleEpoch,
    "sequence_gap": SequenceGap,
    "stream_closed": StreamClosed,
    "sequence_conflict": SeqConflict,
}


def error_for(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    method: str | None = None,
    url: str | None = None,
) -> APIError:
    """The typed exception for an error response."""
    code = f"http_{status}"
    message = ""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        err = parsed["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
    elif isinstance(parsed, dict) and "detail" in parsed:
        message = str(parsed["detail"])
    elif body:
        message = body[:500].decode("utf-8", "replace")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return cls(status, code, message or "request failed", method=method, url=url, headers=lowered)
