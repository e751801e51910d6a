"""How the Durable Streams routes refuse: one exception, and the store's errors mapped to it.

The layers above raise :class:`HTTPError` too (an authorize hook refusing a
stream), so the mapping lives apart from the routes.
"""

from __future__ import annotations

from tether.store import errors
from tether.streams.wire import format_offset

Headers = list[tuple[bytes, bytes]]
TRUE = b"true"


class HTTPError(Exception):
    """A refusal: its status, its error code, a message and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: Headers | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or []


_STORE_ERRORS: list[tuple[type[errors.StoreError], int, str]] = [
    (errors.StreamNotFound, 404, "not_found"),
    (errors.StreamGone, 410, "gone"),
    (errors.StreamConflict, 409, "conflict"),
    (errors.ContentTypeMismatch, 409, "content_type_mismatch"),
    (errors.SeqConflict, 409, "sequence_conflict"),
    (errors.BadRequest, 400, "bad_request"),
    (errors.BackendUnavailable, 503, "unavailable"),
    (errors.InsufficientStorage, 507, "insufficient_storage"),
]


def store_error(err: errors.StoreError) -> HTTPError:
    """The answer to a store error, with the headers the protocol asks for."""
    if isinstance(err, errors.StaleEpoch):
        return HTTPError(
            403, "stale_epoch", str(err), [(b"producer-epoch", str(err.current_epoch).encode())]
        )
    if isinstance(err, errors.SequenceGap):
        return HTTPError(
            409,
            "sequence_gap",
            str(err),
            [
                (b"producer-expected-seq", str(err.expected).encode()),
                (b"producer-received-seq", str(err.received).encode()),
            ],
        )
    if isinstance(err, errors.StreamClosed):
        return HTTPError(
            409,
            "stream_closed",
            str(err),
            [(b"stream-closed", TRUE), (b"stream-next-offset", format_offset(err.tail).encode())],
        )
    for cls, status, code in _STORE_ERRORS:
        if isinstance(err, cls):
            wait = err.retry_after
            headers = None if wait is None else [(b"retry-after", str(wait).encode())]
            return HTTPError(status, code, str(err), headers)
    return HTTPError(500, "internal", "internal error")
