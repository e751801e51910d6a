"""One subscription's durable state and the rules that change it (PROTOCOL.md section 7).

All of it is one record in the store, rewritten whole under the
subscription's lock, so any replica can pick the state up where another left
it. The rules here are I/O-free: the service reads the streams' tails and the
clock and hands them in.

States, by ``wake``:

- idle: ``wake`` is None. Pending work (a linked stream whose tail is past its
  ``acked`` position) starts a wake, unless a webhook retry is scheduled.
- waking: a wake is issued (``generation`` incremented, a new ``wake_id``).
  Pull-wake: written to the wake stream, no holder and no lease until claimed.
  Webhook: sent, with a callback token, the lease running from the issue.
- held: a pull-wake wake claimed by a worker (holder, claim token, lease).

A wake ends on ``done`` (callback, ack, or a webhook answering ``{"done":
true}``), on a release, or when its lease runs out; the holder and token are
cleared, and pending work starts the next wake.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from tether.subscriptions.config import SubscriptionConfig

ACTIVE = "active"
FAILED = "failed"


class Fenced(Exception):
    """A callback, ack or release for a wake that is not the current one (409 FENCED)."""


class AlreadyClaimed(Exception):
    """Another worker holds the lease (409 ALREADY_CLAIMED)."""

    def __init__(self, holder: str, generation: int) -> None:
        super().__init__(f"claimed by {holder!r} (generation {generation})")
        self.holder = holder
        self.generation = generation


class BadAck(ValueError):
    """An ack naming a stream that is not linked, or an offset past its tail (400)."""


@dataclass(slots=True)
class Link:
    """One followed stream: how it is linked and what the subscriber has processed."""

    glob: bool
    explicit: bool
    #: Last processed position, inclusive: reading from it gives the unprocessed events.
    acked: int

    @property
    def link_type(self) -> str:
        return "explicit" if self.explicit else "glob"


@dataclass(slots=True)
class Wake:
    id: str
    generation: int
    issued_at: float
    #: The tails of the pending streams when the wake was made (a webhook's
    #: ``{"done": true}`` acks exactly these).
    snapshot: dict[str, int]
    #: sha256 of the callback (webhook) or claim (pull-wake) token; never the token.
    token_hash: str | None = None
    holder: str | None = None
    #: When the lease ends (Unix seconds); None while a pull-wake waits for a claim.
    lease_until: float | None = None


@dataclass(slots=True)
class Subscription:
    #: The store key: the caller's namespace and the client's id.
    key: str
    id: str
    owner: str | None
    #: What the caller's stream names are prefixed with in the store.
    prefix: str
    config: SubscriptionConfig
    created_at: float
    #: Where the server was reached when the subscription was made (callback URLs).
    base_url: str
    links: dict[str, Link] = field(default_factory=dict)
    generation: int = 0
    wake: Wake | None = None
    status: str = ACTIVE
    attempt: int = 0
    next_attempt_at: float | None = None
    last_error: str | None = None

    # -- serialization -------------------------------------------------------

    def dumps(self) -> bytes:
        doc = asdict(self)
        doc["config"] = self.config.normalized()
        return orjson.dumps(doc)

    @classmethod
    def loads(cls, raw: bytes) -> Subscription:
        doc: dict[str, Any] = orjson.loads(raw)
        c = doc["config"]
        config = SubscriptionConfig(
            c["type"], c["pattern"], tuple(c["streams"]),
            None if c["webhook"] is None else c["webhook"]["url"],
            c["wake_stream"], c["lease_ttl_ms"], c["description"],
        )  # fmt: skip
        wake = doc["wake"]
        return cls(
            key=doc["key"], id=doc["id"], owner=doc["owner"], prefix=doc["prefix"],
            config=config, created_at=doc["created_at"], base_url=doc["base_url"],
            links={p: Link(**link) for p, link in doc["links"].items()},
            generation=doc["generation"], wake=None if wake is None else Wake(**wake),
            status=doc["status"], attempt=doc["attempt"],
            next_attempt_at=doc["next_attempt_at"], last_error=doc["last_error"],
        )  # fmt: skip

    # -- reading -------------------------------------------------------------

    @property
    def lease_ms(self) -> int:
        return self.config.lease_ttl_ms

    def pending(self, tails: dict[str, int]) -> dict[str, int]:
        """The linked streams with events past their acked position: path -> tail."""
        out = {}
        for path, link in self.links.items():
            tail = tails.get(path)
            if tail is not None and tail > link.acked:
                out[path] = tail
        return out

    def due(self) -> float | None:
        """When the sweeper must look at this subscription again (lease end, retry)."""
        if self.wake is not None and self.wake.lease_until is not None:
            return self.wake.lease_until
        if self.wake is None and self.next_attempt_at is not None:
            return self.next_attempt_at
        return None

    # -- transitions -----------------------------------------------------------

    def issue(self, wake_id: str, now: float, pending: dict[str, int]) -> Wake:
        """Start the next wake (idle -> waking)."""
        assert self.wake is None
        self.generation += 1
        self.wake = Wake(wake_id, self.generation, now, dict(pending))
        return self.wake

    def check(self, token: str, wake_id: object, generation: object) -> Wake:
        """The current wake if the request names it and holds its token, else Fenced."""
        wake = self.wake
        if (
            wake is None
            or wake.token_hash is None
            or not hmac.compare_digest(wake.token_hash, token_hash(token))
            or wake_id != wake.id
            or isinstance(generation, bool)
            or generation != wake.generation
        ):
            raise Fenced
        return wake

    def apply_acks(self, acks: dict[str, int], tails: dict[str, int]) -> None:
        """Move acked positions forward (never back); BadAck if one is not allowed."""
        for path, pos in acks.items():
            link = self.links.get(path)
            if link is None:
                raise BadAck(f"stream {path!r} is not linked to this subscription")
            tail = tails.get(path)
            if tail is not None and pos > tail:
                raise BadAck(f"offset for {path!r} is past the stream's tail")
        for path, pos in acks.items():
            link = self.links[path]
            link.acked = max(link.acked, pos)

    def end_wake(self) -> None:
        """The wake is over: holder, token and lease cleared (-> idle)."""
        self.wake = None

    def fail_delivery(self, now: float, delay: float, reason: str) -> None:
        """A webhook attempt failed: idle, status failed, the retry's time persisted."""
        self.wake = None
        self.attempt += 1
        self.status = FAILED
        self.next_attempt_at = now + delay
        self.last_error = reason

    def delivered(self) -> None:
        self.attempt = 0
        self.status = ACTIVE
        self.next_attempt_at = None
        self.last_error = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
