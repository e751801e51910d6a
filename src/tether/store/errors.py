"""Typed store errors; the HTTP layer maps each to its status code."""

from __future__ import annotations


class StoreError(Exception):
    """Base class; ``str(err)`` is a message safe to show a client."""

    #: Seconds after which trying again may work (an HTTP ``Retry-After``);
    #: None when the same request will fail the same way.
    retry_after: int | None = None


class StreamNotFound(StoreError):
    def __init__(self, path: str) -> None:
        super().__init__(f"stream not found: {path}")


class StreamGone(StoreError):
    """Deleted while forks still read through it: its path stays reserved."""

    def __init__(self, path: str) -> None:
        super().__init__(f"stream was deleted: {path}")


class StreamConflict(StoreError):
    """A create that disagrees with the existing stream, or similar clash."""


class ContentTypeMismatch(StoreError):
    pass


class StreamClosed(StoreError):
    def __init__(self, path: str, tail: int) -> None:
        super().__init__(f"stream is closed: {path}")
        self.tail = tail


class SeqConflict(StoreError):
    """Stream-Seq did not increase."""


class BadRequest(StoreError):
    """Well-formed HTTP but semantically invalid (bad fork offset, empty body...)."""


class StaleEpoch(StoreError):
    def __init__(self, current_epoch: int) -> None:
        super().__init__(f"producer epoch is stale; current epoch is {current_epoch}")
        self.current_epoch = current_epoch


class SequenceGap(StoreError):
    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"producer sequence gap: expected {expected}, received {received}")
        self.expected = expected
        self.received = received


class BackendUnavailable(StoreError):
    """The backend cannot be reached; nothing was written."""

    retry_after = 1


class InsufficientStorage(StoreError):
    """The backend cannot write: its disk is full, or failing. Nothing was written.

    Reads still work; writes work again once space is freed, by themselves.
    """

    retry_after = 5


class LeaseLost(StoreError):
    """A fenced append whose writer no longer holds the lease it names; nothing was written."""

    def __init__(self, lease: str) -> None:
        super().__init__(f"lease {lease} is not held by this writer")
