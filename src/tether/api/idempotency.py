"""Idempotent inputs: a request retried with the same ``Idempotency-Key`` gets the first answer.

A client that lost the answer to a send (a cut connection, a timeout) cannot
tell whether it arrived; sending it again must not make a second turn. So a
mutating request may carry ``Idempotency-Key: <anything printable, at most
255 characters>``, and for the retention window (``--idempotency-retention``,
24 h by default) a request with the same key, from the same caller, gets the
first request's answer again and changes nothing.

Everything lives in the store, so it holds across replicas:

- the *claim*: a lease on the key, taken atomically by the request that
  places the input; a duplicate that finds it held is refused (409
  ``idempotency_in_progress``) rather than waiting;
- the *answer*: a record, kept with a fingerprint of the request (its route,
  path and body) and its expiry; a request with the key and another
  fingerprint is refused (409 ``idempotency_key_reused``);
- the *expiry index*: the answers in the order they expire, which a
  background sweep (owned by the app: :meth:`Idempotency.start`,
  :meth:`Idempotency.aclose`) pages through from its oldest end.

Only answers are kept: a request that fails changed nothing, so its key is
free for the retry. A key is scoped to its caller (the API key's identity):
the record's name is a digest of both, so one caller never reaches another's.
Requests without the header pay nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tether.runtime.tasks import cancel_and_wait
from tether.store.base import Store
from tether.store.errors import StoreError

log = logging.getLogger(__name__)

HEADER = "idempotency-key"
#: Longest key accepted (a UUID is 36 characters; Stripe's bound is 255 too).
MAX_KEY = 255
#: Seconds an answer is kept by default.
DEFAULT_RETENTION = 24 * 3600.0
#: Seconds a request holds its key while it places its input. A replica that
#: dies meanwhile leaves the key claimed this long, then a retry may go ahead.
CLAIM_TTL = 30.0
#: The sweep looks at most this often (and at least once per retention).
SWEEP_EVERY = 60.0
SWEEP_PAGE = 256

RECORDS = "idempotency"
EXPIRY_INDEX = "idempotency-expiry"


class BadIdempotencyKey(ValueError):
    code = "invalid_idempotency_key"


class IdempotencyConflict(Exception):
    """409: the key is in use by a request that is not this one, or not finished."""

    code = "conflict"


class KeyReused(IdempotencyConflict):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request (another route or body); "
            "use a new key for a new request"
        )


class InProgress(IdempotencyConflict):
    code = "idempotency_in_progress"

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being processed; "
            "retry after it has been answered"
        )


def check_key(raw: str) -> str:
    """The key as given, or BadIdempotencyKey: 1 to 255 printable ASCII characters."""
    if not 0 < len(raw) <= MAX_KEY or not raw.isascii() or not raw.isprintable():
        raise BadIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters (a UUID, say)"
        )
    return raw


def fingerprint(*parts: Any) -> str:
    """A digest of what makes a request this request: its route, path parameters and body."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    #: What the request answered (JSON): the first request's, when ``replayed``.
    value: Any
    replayed: bool


class Idempotency:
    """The keys' claims, answers and expiry, in ``store`` (see the module docstring)."""

    def __init__(self, store: Store, retention: float = DEFAULT_RETENTION) -> None:
        self.store = store
        self.retention = retention
        self._sweeper: asyncio.Task[None] | None = None

    async def once(
        self,
        owner: str | None,
        key: str,
        digest: str,
        act: Callable[[], Awaitable[Any]],
    ) -> Outcome:
        """``act()``'s answer, kept under ``key``; or the answer kept for it already.

        ``digest`` is the request's :func:`fingerprint`. Raises KeyReused or
        InProgress (nothing done), or what ``act`` raised (its claim let go).
        """
        slot = hashlib.sha256(f"{owner or ''}\0{key}".encode()).hexdigest()
        kept = await self._answer(slot, digest)
        if kept is not None:
            return kept
        token = uuid.uuid4().hex
        lease = _lease(slot)
        if not await self.store.acquire_lease(lease, token, CLAIM_TTL):
            raise InProgress()
        try:
            kept = await self._answer(slot, digest)  # answered between the read and the claim
            if kept is not None:
                return kept
            value = await act()
            expires = time.time() + self.retention
            record = {"fingerprint": digest, "expires": expires, "value": value}
            await self.store.put_record(RECORDS, slot, orjson.dumps(record))
            await self.store.index_put(EXPIRY_INDEX, slot, _expiry_key(expires))
            return Outcome(value, False)
        finally:
            with contextlib.suppress(StoreError):
                await self.store.release_lease(lease, token)

    async def _answer(self, slot: str, digest: str) -> Outcome | None:
        record = await self._live_record(slot)
        if record is None:
            return None
        if record["fingerprint"] != digest:
            raise KeyReused()
        return Outcome(record["value"], True)

    async def _live_record(self, slot: str) -> dict[str, Any] | None:
        raw = await self.store.get_record(RECORDS, slot)
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        return record if record["expires"] > time.time() else None

    # -- the sweep of expired answers ------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="idempotency-sweep")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        every = min(SWEEP_EVERY, self.retention)
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except StoreError as err:  # Redis away, disk full: the next sweep catches up
                log.warning("could not sweep expired idempotency keys: %s", err)
            except Exception:
                log.exception("the sweep of expired idempotency keys failed")

    async def sweep(self) -> int:
        """Delete the answers past their expiry; returns how many were deleted.

        Each is deleted under its key's claim, so that a request reusing a key
        that just expired is never undone; one that holds the claim is left to
        the next sweep (and so is one that expired in the same millisecond as
        the last of a full page).
        """
        deleted = 0
        after: str | None = None
        now = _expiry_key(time.time())
        while True:
            page = await self.store.index_page(EXPIRY_INDEX, after, SWEEP_PAGE)
            for at, slot in page:
                if at > now:
                    return deleted
                deleted += await self._expire(slot)
            if len(page) < SWEEP_PAGE:
                return deleted
            after = page[-1][0]

    async def _expire(self, slot: str) -> int:
        token = uuid.uuid4().hex
        if not await self.store.acquire_lease(_lease(slot), token, CLAIM_TTL):
            return 0
        try:
            if await self._live_record(slot) is not None:
                return 0  # used again since this page was read: indexed anew
            await self.store.delete_record(RECORDS, slot)
            await self.store.index_remove(EXPIRY_INDEX, slot)
            return 1
        finally:
            await self.store.release_lease(_lease(slot), token)


def _lease(slot: str) -> str:
    return f"idempotency:{slot}"


def _expiry_key(at: float) -> str:
    """A sort key whose byte order is time order: milliseconds, zero-padded."""
    return f"{round(at * 1000):016d}"
