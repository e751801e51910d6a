"""Parsing and formatting of the protocol's header and query values."""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tether.store.base import Producer

#: Offsets are two fixed-width decimal fields so that they sort as strings;
#: the first is reserved (always zero today), the second is the position.
_OFFSET_RE = re.compile(r"^(\d{16})_(\d{16})$")
_NONNEG_RE = re.compile(r"^(0|[1-9][0-9]*)$")
_MAX_SAFE_INT = 2**53 - 1
#: The last instant an expiry can be written back (RFC 3339 has four-digit years).
_LATEST_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()

#: Cursor intervals (protocol section 8.1): 20 s counted from 2024-10-09T00:00Z.
CURSOR_EPOCH = 1728432000.0
CURSOR_INTERVAL = 20.0


class WireError(ValueError):
    """A header, query value or body that does not parse; answered with ``status``."""

    status = 400
    code = "bad_request"


def format_offset(pos: int) -> str:
    return f"0000000000000000_{pos:016d}"


def parse_offset(raw: str) -> int | None:
    """Position for an offset token; None means ``now`` (the tail)."""
    if raw == "-1":
        return 0
    if raw == "now":
        return None
    m = _OFFSET_RE.match(raw)
    if m is None or m.group(1) != "0000000000000000":
        raise WireError(f"malformed offset {raw!r}")
    return int(m.group(2))


def parse_nonneg(raw: str, name: str, limit: int = _MAX_SAFE_INT) -> int:
    if _NONNEG_RE.match(raw) is None:
        raise WireError(f"{name} must be a non-negative integer without sign or leading zeros")
    value = int(raw)
    if value > limit:
        raise WireError(f"{name} is too large")
    return value


def parse_expires_at(raw: str) -> float:
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise WireError("Stream-Expires-At must be an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise WireError("Stream-Expires-At must carry a time zone")
    ts = when.timestamp()
    if ts > _LATEST_EXPIRY:
        raise WireError("Stream-Expires-At must be before the year 10000 (UTC)")
    return ts


def format_expires_at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_producer(pid: str | None, epoch: str | None, seq: str | None) -> Producer | None:
    given = (pid is not None, epoch is not None, seq is not None)
    if not any(given):
        return None
    if not all(given):
        raise WireError("Producer-Id, Producer-Epoch and Producer-Seq go together")
    assert pid is not None and epoch is not None and seq is not None
    if not pid.strip():
        raise WireError("Producer-Id must not be empty")
    return Producer(pid, parse_nonneg(epoch, "Producer-Epoch"), parse_nonneg(seq, "Producer-Seq"))


def next_cursor(client_cursor: str | None, now: float | None = None) -> str:
    """A cursor that never goes backwards, even against a client's own (8.1)."""
    interval = int(((time.time() if now is None else now) - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client_cursor is not None and client_cursor.isdigit():
        theirs = int(client_cursor)
        if theirs >= interval:
            jitter = math.ceil(random.randint(1, 3600) / CURSOR_INTERVAL)
            return str(theirs + jitter)
    return str(interval)


def request_origin(scope: Mapping[str, Any]) -> str:
    """``scheme://host`` and the app's root path, as the client addressed the server
    (its Host header, else the socket's address): the start of the URLs it is given."""
    host = None
    for k, v in scope["headers"]:
        if k == b"host":
            host = v.decode("latin-1")
            break
    if host is None:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
