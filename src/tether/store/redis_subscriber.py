"""The Redis store's notification subscriber: Redis Pub/Sub into the local tail chain.

Each append script PUBLISHes one message on ``P tail`` (``P`` the key
prefix): the stream's path and id, start and end positions, the closed flag,
and the appended data itself when it is at most ``inline_max`` bytes (64 KiB).
Deletions and expiries publish too. Each RedisStore runs ONE
:class:`Subscriber` (started by ``open``, stopped by ``aclose``): one task on
one connection (a ``redis_wire.RawConnection``: hiredis parses the messages,
without redis-py's per-message work), which feeds the store's notifier, the same ``TailNotifier``
chain as the local stores, so a process holds one Redis connection for all its
readers. A message that needs no fetch is handled as the connection reads it,
without waking the task (see :class:`_Inbox`). Because Redis runs scripts one
at a time and delivers a channel's messages in order, and the subscriber hands
them on in that order, every process sees every stream's appends in commit order;
the writing process learns of its own appends the same way. An append too large
to inline (kept small so a burst of large appends cannot reach Redis's pub/sub
output buffer limit and get the subscriber disconnected) is fetched once per
process by the subscriber, and only when someone here is waiting on that
stream, before it is published to the chain, so readers always get complete
events.

Every process receives every stream's notifications (one channel, so that a
reader never has to wait for a subscription of its own to be confirmed before
it reads); a process drops at once those for streams nobody here is reading.

If the subscriber's connection drops (or goes silent: it PINGs after 5 quiet
seconds and gives up after 15 without an answer), it reconnects with backoff
(up to 1 s) and then wakes every waiting reader with a *resync* event (start
-1, end beyond any position): readers treat it like an out-of-step event and
re-read the store from their own offset, which picks up whatever was appended
while notifications were lost. Readers are not woken while Redis is away, so
an outage shorter than their heartbeat goes unnoticed by their clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tether.store.notify import TailNotifier
from tether.store.redis_wire import RawConnection, pack

log = logging.getLogger(__name__)

#: Longest pause between the subscriber's reconnection attempts, in seconds.
RECONNECT_MAX = 1.0
#: The subscriber PINGs after this many quiet seconds, and reconnects when it has
#: heard nothing at all (not even a PONG) for the second number of seconds.
PUBSUB_PING_AFTER = 5.0
PUBSUB_DEAD_AFTER = 15.0
#: A resync event's end: beyond any position, so every reader re-reads.
RESYNC_END = 2**62


class RedisTailNotifier(TailNotifier):
    """The local chain, plus what the subscriber needs to know about it.

    (It reads ``TailNotifier._pending``: the links readers are waiting on.)
    """

    def waiting(self, path: str) -> bool:
        fut = self._pending.get(path)
        return fut is not None and not fut.done()

    def waiting_paths(self) -> list[str]:
        return [p for p, fut in self._pending.items() if not fut.done()]

    def resync(self) -> None:
        """Make every waiting reader re-read the store from its own offset."""
        for path in self.waiting_paths():
            self.publish(path, -1, RESYNC_END, [], False)


class _Inbox:
    """What the subscriber's connection received and the task has not yet delivered.

    A notification that needs no waiting is delivered by :meth:`add` itself, as
    the connection reads it (``deliver_now``), when nothing is ahead of it: no
    task wake-up per notification, and a replica drops its own appends' (which
    nobody here may be waiting on) at the cost of a parse. Anything else (the
    subscription's confirmation, a PONG, an append too large to inline that
    someone here waits on) and everything after it goes to the task, in order.
    """

    def __init__(self, deliver_now: Callable[[bytes], bool]) -> None:
        """``deliver_now(payload)``: publish one notification, or False if that needs a fetch."""
        self._deliver_now = deliver_now
        self._replies: list[Any] = []
        self._lost = False
        self._arrived = asyncio.Event()
        #: The task holds replies it has not finished delivering (from the start:
        #: nothing is delivered here before the subscription is confirmed).
        self._holding = True
        #: Socket reads so far: the task's sign that the connection is alive.
        self.reads = 0

    def add(self, replies: list[Any]) -> None:
        self.reads += 1
        if not self._holding and not self._replies:
            deliver_now = self._deliver_now
            for i, reply in enumerate(replies):
                if isinstance(reply, list) and reply[0] == b"message" and deliver_now(reply[2]):
                    continue
                replies = replies[i:]
                break
            else:
                return
        self._replies += replies
        self._arrived.set()

    def end(self) -> None:
        self._lost = True
        self._arrived.set()

    def put_back(self, replies: list[Any]) -> None:
        self._replies[:0] = replies

    def release(self) -> None:
        """The task delivered what it took: later notifications may be delivered on arrival."""
        self._holding = bool(self._replies)

    async def take(self, timeout: float) -> list[Any]:
        """Every reply received so far, in order (waits up to ``timeout`` for one);
        the task holds them until it calls :meth:`release`."""
        if not self._replies and not self._lost:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
        self._arrived.clear()
        if self._lost and not self._replies:
            raise RedisConnectionError("the notification connection was lost")
        replies, self._replies = self._replies, []
        if replies:
            self._holding = True
        return replies


class Subscriber:
    """One task that hands every notification on the store's channel to its notifier."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        notifier: RedisTailNotifier,
        call: Callable[[Awaitable[Any]], Awaitable[Any]],
    ) -> None:
        """``call`` runs one command as the store does (bounded, errors mapped)."""
        self._redis = client
        self._prefix = prefix
        self._channel = (prefix + "tail").encode()
        self.notifier = notifier
        self._call = call
        self._task: asyncio.Task[None] | None = None
        #: Set once the first subscription is confirmed.
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="tether-redis-sub")

    async def stop(self) -> None:
        """Cancel the task and wait for it (it never outlives the store)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen_forever(self) -> None:
        backoff = 0.05
        connected_before = False
        outage_logged = False
        while True:
            inbox = _Inbox(self._deliver_now)
            raw: RawConnection | None = None
            try:
                raw = await RawConnection.open(self._redis.connection_pool, inbox.add, inbox.end)
                raw.write(pack("SUBSCRIBE", self._channel))
                await self._receive(raw, inbox, until_subscribed=True)
                self.subscribed.set()
                if connected_before:
                    log.info("Redis notifications resumed")
                    # Appends made while we were not subscribed were not seen.
                    self.notifier.resync()
                connected_before = True
                outage_logged = False
                backoff = 0.05
                await self._receive(raw, inbox, until_subscribed=False)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # connection lost, Redis restarting...
                level = logging.DEBUG if outage_logged else logging.WARNING
                log.log(level, "no Redis notifications (%s: %s); reconnecting",
                        type(err).__name__, err)  # fmt: skip
                outage_logged = True
            finally:
                if raw is not None:
                    raw.close()
                    with contextlib.suppress(Exception):
                        await raw.wait_closed()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX)

    async def _receive(self, raw: RawConnection, inbox: _Inbox, until_subscribed: bool) -> None:
        """Deliver notifications; PING when quiet, and give up on a silent connection."""
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        reads = inbox.reads
        poll = min(1.0, PUBSUB_PING_AFTER / 2)
        while True:
            replies = await inbox.take(poll)
            now = loop.time()
            if inbox.reads != reads:
                heard, reads = now, inbox.reads
            if not replies:
                if now - heard > PUBSUB_DEAD_AFTER:
                    raise RedisConnectionError("the notification connection went silent")
                if now - max(heard, pinged) > PUBSUB_PING_AFTER:
                    raw.write(pack("PING"))
                    pinged = now
                continue
            for i, reply in enumerate(replies):
                if isinstance(reply, Exception):
                    raise reply
                kind = reply[0]
                if until_subscribed:
                    if kind == b"subscribe":
                        inbox.put_back(replies[i + 1 :])
                        inbox.release()
                        return
                elif kind == b"message":
                    await self._deliver(reply[2])
            inbox.release()

    def _deliver_now(self, payload: bytes) -> bool:
        """Publish one notification unless that needs a fetch first (then False).

        The payload: a header line ``kind id start end closed inline pathlen
        [len...]``, then the path and (when inline) the chunks (``prelude.lua``).
        """
        head, _, rest = payload.partition(b"\n")
        fields = head.split(b" ")
        plen = int(fields[6])
        path = rest[:plen].decode()
        notifier = self.notifier
        if fields[0] == b"d":
            start, end = int(fields[2]), int(fields[3])
            notifier.publish(path, start, end, [], fields[4] == b"1", deleted=True)
            return True
        if not notifier.waiting(path):
            return True
        if fields[5] != b"1":
            return False
        chunks = []
        pos = plen
        for n in map(int, fields[7:]):
            chunks.append(rest[pos : pos + n])
            pos += n
        notifier.publish(path, int(fields[2]), int(fields[3]), chunks, fields[4] == b"1")
        return True

    async def _deliver(self, payload: bytes) -> None:
        """Publish one notification, fetching its data first if it was too large to inline."""
        if self._deliver_now(payload):
            return
        head, _, rest = payload.partition(b"\n")
        fields = head.split(b" ")
        path = rest[: int(fields[6])].decode()
        start, end = int(fields[2]), int(fields[3])
        fetched = await self._fetch(int(fields[1]), start, end)
        if fetched is None:
            self.notifier.publish(path, -1, RESYNC_END, [], False)
            return
        self.notifier.publish(path, start, end, fetched, fields[4] == b"1")

    async def _fetch(self, sid: int, start: int, end: int) -> list[bytes] | None:
        """The rows of one append that was too large to inline (None: gone)."""
        key = f"{self._prefix}d:{sid}"
        entries = await self._call(self._redis.xrange(key, f"{start}-1", f"{end - 1}-1"))
        if not entries:
            return None
        _, last = entries[-1]  # (entry id, fields)
        if int(last[b"e"]) != end:
            return None
        return [fields[b"d"] for _, fields in entries]
