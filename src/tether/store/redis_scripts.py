"""The Redis store's Lua code, read from the package's ``lua/`` files.

Every operation on streams is one Lua function, so that Redis, which runs one
at a time, takes each decision atomically for every replica (see ``redis.py``).
The code lives in ``lua/*.lua``, shipped as package data, so that it reads
(and diffs, and lints) as Lua rather than as Python strings:

- the stream operations (create, append, read, head, delete, sweep) are the
  functions of one Redis Functions library (:func:`stream_library`):
  ``prelude.lua``, which holds the state and helpers they share, then each
  file's code as the body of a function. Redis loads the library once, so a
  call runs only its own code (run as scripts after the prelude, an append
  spent about a fifth of its time in Redis redefining the prelude's helpers);
  their arguments are the key prefix and the time, then their own;
- the keyed scripts (leases, indexes) take their keys as KEYS and stand alone.

``@NAME@`` placeholders in the files are filled in when the code is loaded.

A stream function answers ``{status, ...}``. The statuses are defined once, by
:class:`Status`: the Lua constants of the same names are written from it ahead
of the prelude, and :func:`raise_for` maps each to the ``errors`` class
``local.py`` raises in the same case, with the same message.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tether.store.base import AppendRequest
from tether.store.errors import (
    BadRequest,
    ContentTypeMismatch,
    LeaseLost,
    SeqConflict,
    SequenceGap,
    StaleEpoch,
    StreamClosed,
    StreamConflict,
    StreamGone,
    StreamNotFound,
)

#: A stream created without a content type gets this one.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

#: The functions of the stream library; they take (prefix, time, own arguments...).
STREAM_SCRIPTS = ("create", "append", "read", "head", "delete", "sweep")
#: How Redis answers an FCALL of a function it does not have (lost: flushed, restarted).
FUNCTION_NOT_FOUND = "Function not found"
#: Scripts that take their keys as KEYS and need no prelude.
KEYED_SCRIPTS = ("lease_acquire", "lease_renew", "lease_release", "index_put", "index_remove")


class Status(enum.IntEnum):
    """The first element of a stream script's answer; the Lua code uses these names."""

    OK = 0
    NOT_FOUND = 1  # arg: the path
    GONE = 2  # arg: the path (deleted while forks read through it)
    CONFLICT = 3  # arg: the message
    CT_MISMATCH = 4  # arg: the stream's content type
    CLOSED = 5  # arg: the tail
    SEQ_CONFLICT = 6  # arg: the last Stream-Seq
    BAD_REQUEST = 7  # arg: the message
    STALE_EPOCH = 8  # arg: the current epoch
    SEQ_GAP = 9  # args: the sequence expected, the one received
    LEASE_LOST = 10  # arg: the lease


def lua_status_constants() -> str:
    """``local OK, NOT_FOUND, ... = 0, 1, ...``: :class:`Status` as Lua locals."""
    names = ", ".join(status.name for status in Status)
    values = ", ".join(str(status.value) for status in Status)
    return f"local {names} = {values}\n"


def lua_file(name: str) -> str:
    """The text of ``lua/<name>.lua``, as shipped in the package."""
    return (resources.files("tether.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Library:
    """A Redis Functions library: its name, its code, and its functions' names."""

    name: str
    code: str

    def function(self, script: str) -> str:
        """The name Redis knows stream script ``script`` by (FCALL's first argument)."""
        return f"{self.name}_{script}"


def stream_library(inline_max: int) -> Library:
    """The stream scripts as one library, named after its code.

    The name holds a hash of the code, so replicas running different versions of
    tether (a rolling upgrade) each load and call their own library, side by
    side, and loading it again (``FUNCTION LOAD REPLACE``) changes nothing.
    ``inline_max``: appends up to this many bytes travel inside their notification.
    """
    prelude = lua_status_constants() + lua_file("prelude")
    prelude = prelude.replace("@INLINE_MAX@", str(inline_max))
    bodies = {
        name: lua_file(name).replace("@DEFAULT_CT@", DEFAULT_CONTENT_TYPE)
        for name in STREAM_SCRIPTS
    }
    digest = hashlib.sha1("\0".join([prelude, *bodies.values()]).encode()).hexdigest()
    lib = f"tether_{digest[:16]}"
    functions = "".join(
        f"\nredis.register_function('{lib}_{name}', function(KEYS, ARGV)\nbegin(ARGV)\n{body}end)\n"
        for name, body in bodies.items()
    )
    return Library(lib, f"#!lua name={lib}\n{prelude}{functions}")


def script_texts() -> dict[str, str]:
    """The keyed scripts' texts, by name, ready to register with Redis."""
    return {name: lua_file(name) for name in KEYED_SCRIPTS}


def raise_for(reply: list[Any], path: str, req: AppendRequest | None = None) -> None:
    """Raise the error a script's non-OK answer stands for (as ``local.py`` would).

    ``req``: the append that was answered (its content type and Stream-Seq are
    part of the message of the errors only an append meets).
    """
    code = int(reply[0])
    arg = reply[1].decode() if len(reply) > 1 else ""
    match code:
        case Status.NOT_FOUND:
            raise StreamNotFound(arg)
        case Status.GONE:
            raise StreamGone(arg)
        case Status.CONFLICT:
            raise StreamConflict(arg)
        case Status.BAD_REQUEST:
            raise BadRequest(arg)
        case Status.STALE_EPOCH:
            raise StaleEpoch(int(arg))
        case Status.SEQ_GAP:
            raise SequenceGap(int(arg), int(reply[2]))
        case Status.CLOSED:
            raise StreamClosed(path, int(arg))
        case Status.LEASE_LOST:
            raise LeaseLost(arg)
        case Status.CT_MISMATCH if req is not None:
            raise ContentTypeMismatch(
                f"content type {req.content_type!r} does not match the stream's {arg!r}"
            )
        case Status.SEQ_CONFLICT if req is not None:
            raise SeqConflict(f"Stream-Seq {req.seq!r} is not greater than the last one, {arg!r}")
    raise RuntimeError(f"unexpected answer from the Redis store: {reply!r}")
