"""The errors the runtime raises to its callers, each with the wire code it answers with.

::

    ValueError
    └── InputRefused        a request the runtime refuses; nothing was changed
        ├── InvalidInput    "invalid_input": names a message or tool call the session lacks
        │   └── UnknownRequest  "not_found": answers a client request the session never made
        └── Conflict        "conflict": valid, but clashes with the session's state

The ``code`` is declared on the class (as asyncpg declares its SQLSTATEs), so
that a front maps errors to responses by code, and renaming a class never
changes what clients see.
"""

from __future__ import annotations

from typing import ClassVar


class InputRefused(ValueError):
    """A request the runtime refuses, leaving the session as it was (raise a subclass)."""

    #: The machine-readable code clients get in the error body.
    code: ClassVar[str]


class InvalidInput(InputRefused):
    """A request that names a message or tool call the session does not have."""

    code = "invalid_input"


class UnknownRequest(InvalidInput):
    """A client answer that names a request the session never made (HTTP 404)."""

    code = "not_found"


class Conflict(InputRefused):
    """A request that is valid but clashes with the session's state."""

    code = "conflict"


def run_error_code(err: BaseException) -> str:
    """The ``code`` of the error event of a run that failed with ``err``.

    An error class may declare its wire code as a ``code`` class attribute (the
    providers' errors do); any other exception is named by its class.
    """
    code = getattr(type(err), "code", None)
    return code if isinstance(code, str) else type(err).__name__
