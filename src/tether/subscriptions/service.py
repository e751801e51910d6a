"""Subscriptions as a service: the Python API the HTTP routes (and the server) call.

Every state change of a subscription happens under its lock (an in-process
lock plus a short store lease, so replicas sharing a Redis store take turns)
and ends with the record written back, so a restart or another replica
continues from the store alone:

- appends: the store tells :meth:`SubscriptionService._on_append` of every
  append this process commits; an in-memory index of the subscriptions'
  patterns and explicit streams (refreshed from the store when another replica
  changes it) picks the subscriptions concerned, and those are evaluated in a
  task of their own, never on the append's path;
- a sweeper pages the store's index of due subscriptions (lease ends, webhook
  retries) and evaluates those whose time has come;
- the replica that issues a webhook wake sends it; if it dies, the wake's
  lease runs out and whichever replica's sweeper sees that first (under the
  lock) issues the next wake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tether.observability import metrics
from tether.store import errors
from tether.store.base import AppendRequest, Store
from tether.streams.wire import format_offset
from tether.subscriptions.config import PULL_WAKE, WEBHOOK, SubscriptionConfig
from tether.subscriptions.matcher import Matcher, name_in, starts_for
from tether.subscriptions.signing import Keyring
from tether.subscriptions.state import (
    ACTIVE,
    FAILED,
    AlreadyClaimed,
    Fenced,
    Link,
    Subscription,
    Wake,
    token_hash,
)
from tether.subscriptions.url_policy import check_webhook_url
from tether.subscriptions.webhook import WebhookSender, retry_delay

log = logging.getLogger(__name__)

#: Records: one per subscription, and the generation a deleted one reached.
RECORDS = "ds-subscriptions"
TOMBSTONES = "ds-subscription-tombstones"
#: Changed whenever a subscription's configuration or links change: replicas
#: reload their index when it does.
META = "ds-subscriptions-meta"
#: Subscriptions with a lease end or a retry time, ordered by that time.
DUE = "ds-subscriptions-due"
#: The store lease that serializes one subscription's changes across replicas.
LOCK_TTL = 10.0
#: The sweeper's longest sleep: how late another replica's change (a new
#: subscription, a lease taken there) may be seen here. A change made here
#: wakes it at once; otherwise it sleeps until the next due time.
POLL_INTERVAL = 0.5
KEYRING_REFRESH = 30.0
_PAGE = 200

#: May ``owner`` read the stream at store ``path``? (The API layer knows sessions' owners.)
Readable = Callable[[str | None, str], Awaitable[bool]]


async def _everything_readable(owner: str | None, path: str) -> bool:
    return True


class NotFound(LookupError):
    """No such subscription in the caller's namespace (404)."""


class ConfigConflict(Exception):
    """The id exists with another configuration (409)."""


class BadStream(ValueError):
    """A wake stream that cannot carry wakes (400)."""


class Unavailable(Exception):
    """The subscription's lock could not be had in time (503)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    sub: Subscription
    wake: Wake
    token: str
    tails: dict[str, int]


class SubscriptionService:
    def __init__(
        self,
        store: Store,
        *,
        allow_loopback: bool = False,
        readable: Readable = _everything_readable,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.allow_loopback = allow_loopback
        self._readable = readable
        self._clock = clock
        #: This process, as the holder of subscription locks.
        self._me = secrets.token_hex(8)
        self._locks: dict[str, asyncio.Lock] = {}
        self._matcher = Matcher()
        self._version: bytes | None = None
        #: Subscriptions an append touched, with the paths, waiting for evaluation.
        self._touched: dict[str, set[str]] = {}
        #: Subscriptions whose evaluation failed (the store failed us), with the paths:
        #: the service loop evaluates them again (they may be in no due index).
        self._failed: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        #: Set when a subscription here gets a due time: the sweeper looks again.
        self._soon = asyncio.Event()
        self.keyring: Keyring | None = None
        self._sender: WebhookSender | None = None
        #: Each subscription's status, as last loaded or changed here (for the metrics).
        self._statuses: dict[str, str] = {}
        metrics.watch_subscriptions(self, (ACTIVE, FAILED))

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.keyring = await Keyring.load(self.store)
        self._sender = WebhookSender(self.keyring, allow_loopback=self.allow_loopback)
        await self._refresh_index(force=True)
        self.store.on_append = self._on_append
        self._loop_task = asyncio.create_task(self._run(), name="tether-subscriptions")

    async def aclose(self) -> None:
        if self.store.on_append == self._on_append:
            self.store.on_append = None
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._sender is not None:
            await self._sender.aclose()

    def subscriptions_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self._statuses.values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    # -- configuration ---------------------------------------------------------

    async def put(
        self,
        key: str,
        sub_id: str,
        config: SubscriptionConfig,
        *,
        owner: str | None,
        prefix: str,
        base_url: str,
    ) -> tuple[Subscription, bool]:
        """Create, or re-confirm with the same configuration; True when created.

        The caller has checked that ``owner`` may read the explicit streams; the
        wake stream must exist and hold JSON (BadStream otherwise).
        """
        if config.webhook_url is not None and config.type == WEBHOOK:
            check_webhook_url(config.webhook_url, allow_loopback=self.allow_loopback)
        async with self._locked(key):
            existing = await self._load(key)
            if existing is not None:
                if existing.config.digest() != config.digest():
                    raise ConfigConflict(
                        f"subscription {sub_id!r} exists with a different configuration"
                    )
                return existing, False
            if config.type == PULL_WAKE and config.wake_stream is not None:
                await self._check_wake_stream(prefix + config.wake_stream)
            tomb = await self.store.get_record(TOMBSTONES, key)
            sub = Subscription(
                key=key, id=sub_id, owner=owner, prefix=prefix, config=config,
                created_at=self._clock(), base_url=base_url,
                generation=int(tomb) if tomb else 0,
            )  # fmt: skip
            for name in config.streams:
                await self._link(sub, _path(prefix, name), explicit=True)
            glob = config.glob
            if glob is not None:
                await self._backfill(sub)
            await self._save(sub)
        await self._changed()
        return sub, True

    async def get(self, key: str) -> Subscription:
        sub = await self._load(key)
        if sub is None:
            raise NotFound(key)
        return sub

    async def delete(self, key: str) -> None:
        """Tombstone: gone for every request, its wake's tokens with it."""
        async with self._locked(key):
            sub = await self._load(key)
            if sub is None:
                raise NotFound(key)
            await self.store.put_record(TOMBSTONES, key, str(sub.generation).encode())
            await self.store.delete_record(RECORDS, key)
            await self.store.index_remove(DUE, key)
            self._statuses.pop(key, None)
        await self._changed()

    async def add_streams(self, key: str, paths: list[str]) -> None:
        """Explicit links at each stream's current tail (idempotent)."""
        async with self._locked(key):
            sub = await self.get(key)
            for path in paths:
                await self._link(sub, path, explicit=True)
            await self._save(sub)
        await self._changed()

    async def remove_stream(self, key: str, path: str) -> None:
        """Drop the explicit link; a glob link stays while the pattern matches."""
        async with self._locked(key):
            sub = await self.get(key)
            link = sub.links.get(path)
            if link is not None and link.explicit:
                if link.glob:
                    link.explicit = False
                else:
                    del sub.links[path]
                await self._save(sub)
        await self._changed()

    # -- delivery requests -----------------------------------------------------

    async def claim(self, key: str, worker: str) -> Claimed:
        """Take the lease of a pull-wake subscription (AlreadyClaimed if held)."""
        async with self._locked(key):
            sub = await self.get(key)
            now = self._clock()
            self._expire(sub, now)
            wake = sub.wake
            if wake is not None and wake.holder is not None:
                raise AlreadyClaimed(wake.holder, wake.generation)
            tails = await self._tails(sub)
            if wake is None:
                wake = sub.issue(_wake_id(), now, sub.pending(tails))
            token = _token(key)
            wake.token_hash = token_hash(token)
            wake.holder = worker
            wake.lease_until = now + sub.lease_ms / 1000
            await self._save(sub)
            return Claimed(sub, wake, token, tails)

    async def ack(
        self,
        key: str,
        token: str,
        wake_id: object,
        generation: object,
        acks: list[tuple[str, int]],
        done: bool,
    ) -> bool:
        """Apply acks; ``done`` ends the wake. Returns whether another wake follows.

        Without ``done`` it is a heartbeat: the lease is extended. The same for
        a pull-wake ack and a webhook callback.
        """
        async with self._locked(key):
            sub = await self._load(key)
            if sub is None:
                raise Fenced
            now = self._clock()
            self._expire(sub, now)
            wake = sub.check(token, wake_id, generation)
            tails = await self._tails(sub)
            positions: dict[str, int] = {}
            for name, pos in acks:
                path = _path(sub.prefix, name)
                positions[path] = max(pos, positions.get(path, pos))
            sub.apply_acks(positions, tails)
            if not done:
                wake.lease_until = now + sub.lease_ms / 1000
                await self._save(sub)
                return False
            sub.end_wake()
            woke = await self._wake_if_pending(sub, now, tails)
            await self._save(sub)
        return woke

    async def release(self, key: str, token: str, wake_id: object, generation: object) -> None:
        """Give the wake up without acking; pending work is woken again."""
        async with self._locked(key):
            sub = await self._load(key)
            if sub is None:
                raise Fenced
            now = self._clock()
            self._expire(sub, now)
            sub.check(token, wake_id, generation)
            sub.end_wake()
            await self._wake_if_pending(sub, now, await self._tails(sub))
            await self._save(sub)

    # -- views -----------------------------------------------------------------

    def stream_entries(
        self, sub: Subscription, tails: dict[str, int], paths: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Links as the protocol shows them, with tails when known."""
        out = []
        for path in sorted(sub.links if paths is None else paths):
            link = sub.links.get(path)
            if link is None:
                continue
            entry: dict[str, Any] = {
                "path": _name(sub.prefix, path),
                "link_type": link.link_type,
                "acked_offset": format_offset(link.acked),
            }
            tail = tails.get(path)
            if tail is not None:
                entry["tail_offset"] = format_offset(tail)
                entry["has_pending"] = tail > link.acked
            out.append(entry)
        return out

    # -- the append hook and the sweeper ----------------------------------------

    def _on_append(self, path: str, tail: int) -> None:
        """Told of every committed append: cheap unless a subscription follows ``path``."""
        if self._matcher.empty:
            return
        for key in self._matcher.match(path):
            self._touch(key, path)

    def _touch(self, key: str, path: str) -> None:
        touched = self._touched.get(key)
        if touched is not None:  # an evaluation is queued; it will see this path
            touched.add(path)
            return
        self._touched[key] = {path}
        self._spawn(self._evaluate_touched(key))

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _evaluate_touched(self, key: str) -> None:
        paths: set[str] = set()
        try:
            async with self._locked(key):
                paths = self._touched.pop(key, set())
                sub = await self._load(key)
                if sub is None:
                    return
                linked = False
                for path in paths:
                    linked |= await self._link_discovered(sub, path)
                if linked:
                    await self._save(sub)
                await self._advance(sub)
            if linked:
                await self._changed()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._failed.setdefault(key, set()).update(paths, self._touched.pop(key, set()))
            log.warning("subscription %s: evaluation failed (%s); it is evaluated again in "
                        "%.1fs", key, err, POLL_INTERVAL)  # fmt: skip

    def _retry_failed(self) -> None:
        """Evaluate again the subscriptions whose evaluation failed (each in its task)."""
        failed, self._failed = self._failed, {}
        for key, paths in failed.items():
            for path in paths:
                self._touch(key, path)

    async def _run(self) -> None:
        last_keys = self._clock()
        next_due = self._clock()
        while True:
            pause = min(max(next_due - self._clock(), 0.0), POLL_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), pause)
            self._soon.clear()
            self._retry_failed()
            try:
                await self._refresh_index()
                next_due = await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                next_due = self._clock() + POLL_INTERVAL
                log.exception("subscription sweep failed; will retry")
            # Apart from the sweep: a sweep that keeps failing does not keep old keys here.
            if self.keyring is not None and self._clock() - last_keys > KEYRING_REFRESH:
                last_keys = self._clock()
                try:
                    await self.keyring.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("could not refresh the webhook signing keys; will retry")

    async def _sweep(self) -> float:
        """Evaluate the subscriptions whose time has come; returns the next due time."""
        now = self._clock()
        for due_key, key in await self.store.index_page(DUE, None, _PAGE):
            if int(due_key) > now * 1000:
                return int(due_key) / 1000
            async with self._locked(key):
                sub = await self._load(key)
                if sub is None:
                    await self.store.index_remove(DUE, key)
                    continue
                if not await self._advance(sub):
                    await self._save(sub)  # the index was behind the record: set it right
        return now + POLL_INTERVAL

    # -- the state machine's steps ---------------------------------------------

    async def _advance(self, sub: Subscription) -> bool:
        """Under the lock: end an expired lease, then wake if work is pending.

        Written back (True) only if something changed: appends to a stream
        whose subscription already has a wake in flight cost no write.
        """
        before = sub.dumps()
        now = self._clock()
        self._expire(sub, now)
        if sub.wake is None:
            await self._wake_if_pending(sub, now, await self._tails(sub))
        if sub.dumps() == before:
            return False
        await self._save(sub)
        return True

    def _expire(self, sub: Subscription, now: float) -> None:
        wake = sub.wake
        if wake is not None and wake.lease_until is not None and wake.lease_until <= now:
            sub.end_wake()

    async def _wake_if_pending(self, sub: Subscription, now: float, tails: dict[str, int]) -> bool:
        """Issue the next wake if work is pending and no retry is scheduled for later."""
        if sub.wake is not None:
            return False
        if sub.next_attempt_at is not None and sub.next_attempt_at > now:
            return False
        pending = sub.pending(tails)
        if not pending:
            if sub.next_attempt_at is not None:
                sub.delivered()  # the retry's work was acked meanwhile: nothing to retry
            return False
        wake = sub.issue(_wake_id(), now, pending)
        metrics.SUBSCRIPTION_WAKES.labels(sub.config.type).inc()
        if sub.config.type == PULL_WAKE:
            await self._write_wake_event(sub, wake)
        else:
            token = _token(sub.key)
            wake.token_hash = token_hash(token)
            wake.lease_until = now + sub.lease_ms / 1000
            self._spawn(self._deliver(sub.key, wake.id, token))
        return True

    async def _write_wake_event(self, sub: Subscription, wake: Wake) -> None:
        assert sub.config.wake_stream is not None
        first = min(wake.snapshot)
        event = {
            "type": "wake",
            "subscription_id": sub.id,
            "stream": _name(sub.prefix, first),
            "generation": wake.generation,
            "ts": int(wake.issued_at * 1000),
        }
        try:
            await self.store.append(
                _path(sub.prefix, sub.config.wake_stream),
                AppendRequest([orjson.dumps(event)], "application/json"),
            )
        except errors.StoreError as err:
            # The wake stands (a worker may still claim it); the application's
            # wake stream is gone or closed, which the log says.
            log.warning("subscription %s: wake event not written: %s", sub.id, err)

    async def _deliver(self, key: str, wake_id: str, token: str) -> None:
        """Send one webhook wake and record what came of it."""
        sub = await self._load(key)
        if sub is None or sub.wake is None or sub.wake.id != wake_id or self._sender is None:
            return
        wake = sub.wake
        assert sub.config.webhook_url is not None
        payload = {
            "subscription_id": sub.id,
            "wake_id": wake.id,
            "generation": wake.generation,
            "streams": self.stream_entries(sub, wake.snapshot, list(wake.snapshot)),
            "callback_url": callback_url(sub),
            "callback_token": token,
        }
        outcome = await self._sender.deliver(sub.config.webhook_url, payload)
        done = "done" if outcome.done else "accepted"
        metrics.WEBHOOK_DELIVERIES.labels(done if outcome.ok else "failed").inc()
        async with self._locked(key):
            sub = await self._load(key)
            if sub is None or sub.wake is None or sub.wake.id != wake_id:
                return  # called back, expired or deleted meanwhile
            now = self._clock()
            if not outcome.ok:
                sub.fail_delivery(now, retry_delay(sub.attempt + 1), outcome.reason)
                log.info("subscription %s: webhook failed (%s); retry %d at +%.1fs",
                         sub.id, outcome.reason, sub.attempt,
                         (sub.next_attempt_at or now) - now)  # fmt: skip
            else:
                sub.delivered()
                if outcome.done:
                    sub.apply_acks(dict(sub.wake.snapshot), {})
                    sub.end_wake()
                    await self._wake_if_pending(sub, now, await self._tails(sub))
            await self._save(sub)

    # -- links -----------------------------------------------------------------

    async def _backfill(self, sub: Subscription) -> None:
        """Link every existing stream the pattern matches, at its tail."""
        glob = sub.config.glob
        assert glob is not None
        for prefix in starts_for(sub.prefix, glob):
            cursor: str | None = None
            while True:
                paths, cursor = await self.store.list_paths(prefix, cursor, _PAGE)
                for path in paths:
                    if await self._matches(sub, path):
                        await self._link(sub, path, explicit=False)
                if cursor is None:
                    break

    async def _matches(self, sub: Subscription, path: str) -> bool:
        glob = sub.config.glob
        wake = sub.config.wake_stream
        if glob is None or (wake is not None and path == _path(sub.prefix, wake)):
            return False
        name = name_in(sub.prefix, path)
        if name is None or not glob.match(name):
            return False
        return await self._readable(sub.owner, path)

    async def _link(self, sub: Subscription, path: str, *, explicit: bool) -> None:
        """Link ``path`` at its current tail (0 if it does not exist yet)."""
        link = sub.links.get(path)
        if link is not None:
            if explicit:
                link.explicit = True
            else:
                link.glob = True
            return
        try:
            acked = (await self.store.head(path)).tail
        except (errors.StreamNotFound, errors.StreamGone):
            acked = 0
        sub.links[path] = Link(glob=not explicit, explicit=explicit, acked=acked)

    async def _link_discovered(self, sub: Subscription, path: str) -> bool:
        """A stream the pattern matches appeared: linked at its start, so its events count.

        (An explicit link to it, made before it existed, becomes a glob link too.)
        """
        link = sub.links.get(path)
        if (link is not None and link.glob) or not await self._matches(sub, path):
            return False
        if link is not None:
            link.glob = True
            return True
        try:
            start = (await self.store.head(path)).fork_offset
        except (errors.StreamNotFound, errors.StreamGone):
            return False
        sub.links[path] = Link(glob=True, explicit=False, acked=start)
        return True

    async def _tails(self, sub: Subscription) -> dict[str, int]:
        tails: dict[str, int] = {}
        for path in sub.links:
            with contextlib.suppress(errors.StreamNotFound, errors.StreamGone):
                tails[path] = (await self.store.head(path)).tail
        return tails

    async def _check_wake_stream(self, path: str) -> None:
        try:
            meta = await self.store.head(path)
        except (errors.StreamNotFound, errors.StreamGone):
            raise BadStream("wake_stream does not exist: create it (a JSON stream) first") from None
        if not meta.json:
            raise BadStream("wake_stream must be a JSON stream (Content-Type: application/json)")

    # -- storage ---------------------------------------------------------------

    async def _load(self, key: str) -> Subscription | None:
        raw = await self.store.get_record(RECORDS, key)
        return None if raw is None else Subscription.loads(raw)

    async def _save(self, sub: Subscription) -> None:
        await self.store.put_record(RECORDS, sub.key, sub.dumps())
        self._statuses[sub.key] = sub.status
        due = sub.due()
        if due is None:
            await self.store.index_remove(DUE, sub.key)
        else:
            await self.store.index_put(DUE, sub.key, f"{int(due * 1000):016d}")
            self._soon.set()  # the sweeper recomputes its sleep

    async def _changed(self) -> None:
        """Say (to every replica) that the index must be reloaded; reload ours now."""
        await self.store.put_record(META, "version", secrets.token_hex(8).encode())
        await self._refresh_index(force=True)

    async def _refresh_index(self, force: bool = False) -> None:
        version = await self.store.get_record(META, "version")
        if not force and version == self._version:
            return
        self._version = version
        subs = [Subscription.loads(raw) for _, raw in await self.store.list_records(RECORDS)]
        self._matcher = Matcher.build(subs)
        self._statuses = {sub.key: sub.status for sub in subs}

    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            name = f"ds-subscription:{key}"
            deadline = time.monotonic() + LOCK_TTL
            pause = 0.002
            while not await self.store.acquire_lease(name, self._me, LOCK_TTL):
                if time.monotonic() > deadline:
                    raise Unavailable("the subscription is busy; try again")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
            try:
                yield
            finally:
                await self.store.release_lease(name, self._me)


def callback_url(sub: Subscription) -> str:
    return f"{sub.base_url}__ds/subscriptions/{sub.id}/callback"


def _path(prefix: str, name: str) -> str:
    """The store path of a caller's stream name (sessions live outside namespaces)."""
    return name if name.startswith("sessions/") else prefix + name


def _name(prefix: str, path: str) -> str:
    return path[len(prefix) :] if prefix and path.startswith(prefix) else path


def _wake_id() -> str:
    return "w_" + secrets.token_urlsafe(12)


def _token(key: str) -> str:
    """An opaque bearer token that names its subscription, so any replica finds it.

    Only its hash is stored; it carries the subscription's store key so that a
    callback needs no API key (it is the credential).
    """
    where = urlsafe_b64encode(key.encode()).decode().rstrip("=")
    return f"{where}.{secrets.token_urlsafe(32)}"


def token_subscription(token: str) -> str | None:
    """The store key a token names, or None for a token no server made."""
    where, sep, _ = token.partition(".")
    if not sep or not where:
        return None
    try:
        return urlsafe_b64decode(where + "=" * (-len(where) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
