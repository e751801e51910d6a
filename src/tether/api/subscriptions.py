"""Subscriptions under tether's access rules: the caller's namespace, and who reads what.

With ``TETHER_API_KEYS`` a subscription lives in its key's namespace like the
key's streams (``api.access``): its id, pattern, streams and wake stream name
the key's own streams, another key's subscription does not exist (404), and a
session's stream (``sessions/<id>``) is followed only by the key that owns the
session. Read tokens may not touch subscriptions.
"""

from __future__ import annotations

from tether.api.access import SESSIONS, StreamPolicy, not_found
from tether.sessions.service import SessionNotFound
from tether.streams.view import Scope
from tether.subscriptions.routes import Identify, Namespace
from tether.subscriptions.service import Readable


def identify(policy: StreamPolicy) -> Identify:
    """The hook by which the control routes learn a request's namespace."""

    async def namespace(scope: Scope, headers: dict[str, str]) -> Namespace:
        caller = policy.caller(scope, headers)
        if caller.read_only:
            raise not_found(scope["path"])
        return Namespace(caller.owner, policy.prefix(caller), policy.view(caller).source)

    return namespace


def readable(policy: StreamPolicy) -> Readable:
    """Whether a subscription's owner may follow the stream at a store path."""

    async def may_read(owner: str | None, path: str) -> bool:
        if owner is None or not path.startswith(SESSIONS):
            return True
        session_id = path.removeprefix(SESSIONS)
        if "/" in session_id:
            return False
        try:
            await policy.sessions.record(session_id, owner)
        except SessionNotFound:
            return False
        return True

    return may_read
