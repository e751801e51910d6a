"""Who may touch which stream, and which store path a caller's stream name stands for.

With ``TETHER_API_KEYS`` set:

- Each key has its own namespace of raw streams: ``/v1/stream/x`` is a
  different stream for every key (stored as ``~keys/<key identity>/x``), so
  another key's streams do not exist for it: 404 on every method, HEAD
  included, and as a fork's source. ``--shared-streams`` puts all keys' raw
  streams in one namespace instead, the one used when auth is off.
- ``sessions/<id>`` is a session's event stream: its owner may read it (GET,
  HEAD) and fork it; only tether writes to it. To any other key it does not
  exist.
- A read token reads its one resource (GET, HEAD) and nothing else.

Paths under ``~keys/`` are reserved in the shared namespace, so a shared or
auth-off client can never name a key's private stream.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from tether.api.auth import Auth, Caller, Unauthorized, session_resource, stream_resource
from tether.sessions.service import SessionNotFound, SessionService
from tether.store.base import Store
from tether.store.errors import StreamGone, StreamNotFound
from tether.streams.http_errors import HTTPError
from tether.streams.view import Scope

SESSIONS = "sessions/"
PRIVATE = "~keys/"
_READS = ("GET", "HEAD")
#: Entries checked for streams that are gone when a key reaches its limit.
_PRUNE = 1000


def _streams_of(owner: str) -> str:
    return f"streams:{owner}"


def not_found(name: str) -> HTTPError:
    return HTTPError(404, "not_found", f"stream not found: {name}")


@dataclass(frozen=True, slots=True)
class StreamView:
    """One request's view of the store: a caller and the namespace its names live in."""

    policy: StreamPolicy
    caller: Caller
    #: Prepended to the caller's stream names ("" for the shared namespace).
    prefix: str

    def path(self, name: str) -> str:
        if name.startswith(SESSIONS):
            return name
        if not self.prefix and name.startswith(PRIVATE):
            raise HTTPError(400, "reserved_path", f"stream paths under {PRIVATE} are reserved")
        return self.prefix + name

    async def source(self, name: str) -> str:
        """Store path of a fork's source, if this caller may read it (else 404)."""
        if name.startswith(SESSIONS):
            await self.policy.check_session_read(self.caller, name)
            return name
        return self.path(name)

    def shown(self, message: str) -> str:
        """``message`` with store paths written as this caller names them."""
        return message.replace(self.prefix, "") if self.prefix else message

    async def created(self, path: str) -> None:
        if self.caller.owner is not None:
            key = f"{time.time_ns():020d}:{path}"
            await self.policy.store.index_put(_streams_of(self.caller.owner), path, key)

    async def deleted(self, path: str) -> None:
        if self.caller.owner is not None:
            await self.policy.store.index_remove(_streams_of(self.caller.owner), path)


class StreamPolicy:
    def __init__(
        self,
        auth: Auth,
        sessions: SessionService,
        store: Store,
        *,
        shared: bool = False,
        max_streams: int = 0,
    ) -> None:
        self.auth = auth
        self.sessions = sessions
        #: The streams' store (the policy keeps each key's index of its streams there).
        self.store = store
        self.shared = shared
        #: Streams one key may create (0: no limit); keyless callers are not limited.
        self.max_streams = max_streams
        #: Without keys every caller is the same anonymous one, with one view.
        self._open_view = None if auth.enabled else self.view(Caller(None))

    def prefix(self, caller: Caller) -> str:
        if caller.owner is None or self.shared:
            return ""
        return f"{PRIVATE}{caller.owner}/"

    def view(self, caller: Caller) -> StreamView:
        return StreamView(self, caller, self.prefix(caller))

    def caller(self, scope: Scope, headers: dict[str, str]) -> Caller:
        token = None
        query = scope.get("query_string", b"")
        if b"token=" in query:
            token = parse_qs(query.decode("latin-1")).get("token", [None])[0]
        try:
            return self.auth.caller(headers.get("authorization"), token)
        except Unauthorized as err:
            raise HTTPError(
                401, "unauthorized", str(err), [(b"www-authenticate", b"Bearer")]
            ) from None

    async def authorize(self, scope: Scope, name: str, headers: dict[str, str]) -> StreamView:
        """The hook of ``StreamsApp``: refuse the request, or say where its names live."""
        if self._open_view is not None and not name.startswith(SESSIONS):
            return self._open_view  # without keys, nothing outside sessions/ is refused
        caller = self.caller(scope, headers)
        view = self.view(caller)
        method = scope["method"]
        if name.startswith(SESSIONS):
            await self.check_session_read(caller, name)
            if method not in _READS:
                raise HTTPError(405, "read_only", "a session's stream is written by tether only")
            return view
        if caller.read_only and (
            method not in _READS or not caller.may_read(stream_resource(view.path(name)))
        ):
            raise not_found(name)
        if method == "PUT" and caller.owner is not None and self.max_streams:
            await self._check_quota(caller.owner, view.path(name))
        return view

    async def _check_quota(self, owner: str, path: str) -> None:
        """429 if a PUT would make one stream more than ``owner`` may have.

        Streams that expired are still counted until a check finds the key at
        its limit; then the oldest entries are checked and the gone ones dropped.
        """
        index = _streams_of(owner)
        if await self.store.index_count(index) < self.max_streams:
            return
        with contextlib.suppress(StreamNotFound, StreamGone):
            await self.store.head(path)
            return  # it exists: the PUT creates nothing
        for _, member in await self.store.index_page(index, None, _PRUNE):
            try:
                await self.store.head(member)
            except (StreamNotFound, StreamGone):
                await self.store.index_remove(index, member)
        if await self.store.index_count(index) >= self.max_streams:
            raise HTTPError(
                429,
                "quota_exceeded",
                f"this key has {self.max_streams} streams, the most it may have; "
                "delete some to make room",
            )

    async def check_session_read(self, caller: Caller, name: str) -> None:
        """404 unless ``caller`` may read the session whose stream is ``name``."""
        session_id = name.removeprefix(SESSIONS)
        if not caller.may_read(session_resource(session_id)) or "/" in session_id:
            raise not_found(name)
        try:
            await self.sessions.record(session_id, caller.owner)
        except SessionNotFound:
            raise not_found(name) from None
