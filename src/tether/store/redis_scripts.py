"""The Redis store's Lua scripts, read from the package's ``lua/`` files.

Every operation on streams is one script, so that Redis, which runs one script
at a time, takes each decision atomically for every replica (see ``redis.py``).
The scripts live in ``lua/*.lua``, shipped as package data, so that they read
(and diff, and lint) as Lua rather than as Python strings:

- the stream scripts (create, append, read, head, delete, sweep) each run after
  ``prelude.lua``, which holds the state and helpers they share; their
  arguments are the key prefix and the time, then their own;
- the keyed scripts (leases, indexes) take their keys as KEYS and stand alone.

``@NAME@`` placeholders in the files are filled in when the scripts are loaded.

A stream script answers ``{status, ...}``. The statuses are defined once, by
:class:`Status`: the Lua constants of the same names are written from it ahead
of the prelude, and :func:`raise_for` maps each to the ``errors`` class
``local.py`` raises in the same case, with the same message.
"""

from __future__ import annotations

import enum
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

#: Scripts that run after ``prelude.lua`` and take (prefix, time, own arguments...).
STREAM_SCRIPTS = ("create", "append", "read", "head", "delete", "sweep")
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


def script_texts(inline_max: int) -> dict[str, str]:
    """Every script's full text, by name, ready to register with Redis.

    ``inline_max``: appends up to this many bytes travel inside their notification.
    """
    prelude = lua_status_constants() + lua_file("prelude")
    prelude = prelude.replace("@INLINE_MAX@", str(inline_max))
    texts = {}
    for name in STREAM_SCRIPTS:
        body = lua_file(name).replace("@DEFAULT_CT@", DEFAULT_CONTENT_TYPE)
        texts[name] = prelude + body
    for name in KEYED_SCRIPTS:
        texts[name] = lua_file(name)
    return texts


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
