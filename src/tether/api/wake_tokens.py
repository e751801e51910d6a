"""The worker API for a webhook wake's callback token: the sessions of that wake, nothing else.

An agent served by a webhook handler (``TETHER_WEBHOOK_AGENTS``) gets each wake
of its work stream's subscription as a signed POST carrying a callback token.
The handler calls the worker API with ``Authorization: Bearer <callback
token>``; such a caller:

- is refused ``409 fenced`` once its wake is over (done, expired, or followed
  by another generation), on every call;
- may take the lease only of the sessions the wake's work stream entries name
  (else 404); reading (attachments included) and appending then follow the
  worker API's rules (as the lease holder only), under an identity derived
  from the token, so a lease taken with one wake's token is never another wake's;
- reads no work or wake stream, claims nothing, and says no hello;
- learns its wake's sessions (``wake``) and ends or extends its wake
  (``ack``, with ``done`` or as a heartbeat).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tether.runtime.dispatch import WorkDispatch, subscription_key, work_stream
from tether.store.base import Store
from tether.subscriptions.service import NotFound, SubscriptionService, token_subscription
from tether.subscriptions.state import Fenced

#: Worker API operations a callback token may call with the worker's own rules.
DELEGATED = frozenset(
    {
        "head", "read", "attachment", "append", "record_get", "record_put", "record_delete",
        "lease_acquire", "take", "lease_renew", "lease_release", "index_put", "index_remove",
        "note_run", "append_batch",
    }
)  # fmt: skip
_SESSION_LEASE = "session:"
#: Wakes whose sessions are remembered (a wake's entries never change).
_REMEMBERED = 256
#: Most work stream entries read for one wake.
_READ_BYTES = 4 * 1024 * 1024


class TokenRefused(Exception):
    """A callback token's call refused: ``status`` and ``code``, as the worker API answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class WakeScope:
    """What one callback token reaches: its agent's wake and that wake's sessions."""

    agent: str
    token: str
    wake_id: str
    generation: int
    #: The work stream's offset the wake covers up to (acked by ``done``).
    tail: int
    sessions: frozenset[str]

    @property
    def identity(self) -> str:
        """The lease owners' prefix for this token (it changes with every wake)."""
        return "whk_" + hashlib.sha256(self.token.encode()).hexdigest()[:24]


class WakeTokens:
    """Finds a callback token's wake and checks its calls (one per server)."""

    def __init__(self, store: Store, dispatch: WorkDispatch) -> None:
        self.store = store
        self.dispatch = dispatch
        self._sessions: OrderedDict[str, frozenset[str]] = OrderedDict()

    def _service(self) -> SubscriptionService:
        subscriptions = self.dispatch.subscriptions
        if subscriptions is None:
            raise TokenRefused(503, "unavailable", "the server is starting")
        return subscriptions

    async def scope(self, authorization: str | None) -> WakeScope | None:
        """The wake of ``Authorization: Bearer <callback token>``; None if the header
        holds no token of a webhook-served agent's subscription; 409 if its wake is over."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        key = token_subscription(token)
        agent = next((a for a in self.dispatch.webhooks if subscription_key(a) == key), None)
        if agent is None:
            return None
        try:
            sub = await self._service().get(subscription_key(agent))
            wake = sub.wake
            if wake is None:
                raise Fenced
            sub.check(token, wake.id, wake.generation)
        except (NotFound, Fenced):
            raise TokenRefused(409, "fenced", "that wake is over") from None
        work = work_stream(agent)
        tail = wake.snapshot.get(work, sub.links[work].acked)
        sessions = await self._wake_sessions(wake.id, work, sub.links[work].acked, tail)
        return WakeScope(agent, token, wake.id, wake.generation, tail, sessions)

    async def _wake_sessions(self, wake_id: str, work: str, start: int, end: int) -> frozenset[str]:
        known = self._sessions.get(wake_id)
        if known is not None:
            return known
        found: set[str] = set()
        position = start
        while position < end:
            res = await self.store.read(work, position, _READ_BYTES)
            for i, chunk in enumerate(res.chunks):
                if res.start + i < end:
                    found.add(str(orjson.loads(chunk)["session"]))
            if not res.chunks:
                break
            position = res.next
        sessions = self._sessions[wake_id] = frozenset(found)
        while len(self._sessions) > _REMEMBERED:
            self._sessions.popitem(last=False)
        return sessions

    async def call(
        self,
        scope: WakeScope,
        op: str,
        body: dict[str, Any],
        delegate: Callable[[str, dict[str, Any]], Any] | None,
    ) -> Mapping[str, Any]:
        """One worker API call with a callback token: ``wake`` and ``ack`` here, the
        others (``delegate``, the worker API's own) after the token's own checks."""
        if op == "wake":
            return {
                "agent": scope.agent, "wake_id": scope.wake_id, "generation": scope.generation,
                "sessions": sorted(scope.sessions), "identity": scope.identity,
                "lease_ttl": self.dispatch.lease_ttl,
            }  # fmt: skip
        if op == "ack":
            return await self._ack(scope, bool(body.get("done")))
        if op not in DELEGATED or delegate is None:
            raise TokenRefused(403, "forbidden", f"a callback token may not call {op!r}")
        path = body.get("path")
        if op in ("head", "read") and not (isinstance(path, str) and path.startswith("sessions/")):
            raise TokenRefused(404, "not_found", f"not found: {path}")
        name = body.get("name")
        if (
            op in ("lease_acquire", "take")
            and isinstance(name, str)
            and name.startswith(_SESSION_LEASE)
        ):
            session_id = name[len(_SESSION_LEASE) :]
            if session_id not in scope.sessions:
                raise TokenRefused(404, "not_found", f"not found: session {session_id}")
        return await delegate(scope.identity, body)

    async def _ack(self, scope: WakeScope, done: bool) -> dict[str, Any]:
        """End the wake, acking its entries (``done``), or extend its lease (heartbeat)."""
        acks = [(work_stream(scope.agent), scope.tail)] if done else []
        try:
            more = await self._service().ack(
                subscription_key(scope.agent), scope.token, scope.wake_id, scope.generation,
                acks, done,
            )  # fmt: skip
        except Fenced:
            raise TokenRefused(409, "fenced", "that wake is over") from None
        return {"more": more}
