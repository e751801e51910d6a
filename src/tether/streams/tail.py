"""Follow a stream from a position: catch up from the store, then go live.

Yields ``(start, chunks, next)`` batches in order, exactly once each, and
``None`` when ``heartbeat`` seconds pass quietly (so a caller can keep its
connection warm). Ends when the stream closes or is deleted, or ``stop`` (the
server's end, shared by every reader) or ``leave`` (this reader's own end: its
client left) resolves.

A follower whose client stops taking what it writes stops pulling, and the link
of the tail chain it holds keeps every later append alive: a :class:`Backlog`
counts what piles up so behind it and cuts it off past a bound.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

from tether.store.base import Store
from tether.store.notify import TailEvent, TailNotifier

Batch = tuple[int, list[bytes], int]


class Backlog:
    """The appends a follower has not written yet, in bytes; ``on_cut`` past ``limit``.

    It listens to the stream (:meth:`TailNotifier.listen`), one pass per append
    for every follower, so it counts even while its follower waits on its client.
    Once more than ``limit`` bytes wait (one append always fits), it is cut:
    ``on_cut`` is called once and it listens no more. Its follower ends, letting
    go of the chain, and its client resumes from :attr:`sent`.
    """

    __slots__ = ("cut", "limit", "on_cut", "pending", "sent", "size")

    def __init__(self, sent: int, limit: int, on_cut: Callable[[], object]) -> None:
        #: The position the follower's client has been sent everything before.
        self.sent = sent
        self.limit = limit
        self.on_cut = on_cut
        #: ``(end, bytes)`` of each append past :attr:`sent`; ``size`` their sum.
        self.pending: list[tuple[int, int]] = []
        self.size = 0
        self.cut = False

    def deliver(self, ev: TailEvent) -> bool:
        if ev.end > self.sent and not ev.deleted:
            size = sum(map(len, ev.chunks))
            self.pending.append((ev.end, size))
            self.size += size
            if self.size > self.limit and len(self.pending) > 1:
                self.pending = []
                self.cut = True
                self.on_cut()
                return False
        return not (ev.closed or ev.deleted)

    def sent_up_to(self, position: int) -> None:
        """The follower has written everything before ``position``."""
        self.sent = position
        pending = self.pending
        done = 0
        while done < len(pending) and pending[done][0] <= position:
            self.size -= pending[done][1]
            done += 1
        if done:
            del pending[:done]


async def tail(
    store: Store,
    name: str,
    position: int,
    *,
    stop: asyncio.Future[None] | None = None,
    leave: asyncio.Future[None] | None = None,
    heartbeat: float = 15.0,
    chunk: int = 1024 * 1024,
) -> AsyncIterator[Batch | None]:
    notifier = store.notifier
    notifier.subscribe(name)
    # The reader's own future while it sleeps. ``stop`` is shared by every
    # reader of the server, so it gets one callback per reader, not one per
    # sleep: removing a callback scans them all, and a reader sleeps per token.
    sleeping: list[asyncio.Future[None]] = []
    wake = functools.partial(_wake_all, sleeping)
    _on_end(stop, leave, wake)
    try:
        while True:
            # Catch up from the store; the chain link is taken before each read,
            # so nothing appended after the read can be missed.
            fut = notifier.watch(name)
            res = await store.read(name, position, chunk)
            if res.chunks:
                yield res.start, res.chunks, res.next
            position = res.next
            if res.closed:
                return
            # Live once the read is up to date (else read again): follow the
            # chain until it gets out of step with ``position``.
            live = res.up_to_date
            while live:
                # (Inline tests, not a helper: this runs once per token.)
                ended = (stop is not None and stop.done()) or (leave is not None and leave.done())
                if not fut.done() and not ended:
                    # (Skipped when the next append is already there.)
                    await _sleep(notifier, name, heartbeat, sleeping)
                    ended = (stop is not None and stop.done()) or (
                        leave is not None and leave.done()
                    )
                # The reader's end, or the chain's (the last reader left).
                if ended or fut.cancelled():
                    return
                if not fut.done():
                    yield None
                    continue
                event = fut.result()
                fut = event.next
                if event.deleted:
                    return
                if event.start != position:
                    break  # re-read the store from position
                if event.chunks:
                    yield event.start, event.chunks, event.end
                position = event.end
                if event.closed:
                    return
    finally:
        _off_end(stop, leave, wake)
        notifier.unsubscribe(name)


def _on_end(
    stop: asyncio.Future[None] | None,
    leave: asyncio.Future[None] | None,
    callback: Callable[[asyncio.Future[None]], object],
) -> None:
    """Call ``callback`` when ``stop`` or ``leave`` (either may be None) resolves."""
    if stop is not None:
        stop.add_done_callback(callback)
    if leave is not None:
        leave.add_done_callback(callback)


def _off_end(
    stop: asyncio.Future[None] | None,
    leave: asyncio.Future[None] | None,
    callback: Callable[[asyncio.Future[None]], object],
) -> None:
    """Undo :func:`_on_end`."""
    if stop is not None:
        stop.remove_done_callback(callback)
    if leave is not None:
        leave.remove_done_callback(callback)


def _wake_all(sleeping: list[asyncio.Future[None]], _: object) -> None:
    """Wake the reader's sleep in progress, if any (``stop`` or ``leave`` resolved)."""
    for waiter in sleeping:
        _wake(waiter)


async def _sleep(
    notifier: TailNotifier, name: str, heartbeat: float, sleeping: list[asyncio.Future[None]]
) -> None:
    """Until the next publish on ``name``, ``heartbeat`` seconds, or a wake-up via ``sleeping``.

    The publish itself resolves this reader's own future, so the reader runs
    in the very next loop iteration (waiting on the shared future through
    asyncio.wait took two): under load each iteration a token waits is the
    whole loop's work again.
    """
    waiter = notifier.sleeper(name)
    sleeping.append(waiter)
    # A plain timer that wakes the waiter: ~1 us per sleep on uvloop, where
    # asyncio.timeout (which cancels and uncancels the task) took 4-7 us.
    timer = waiter.get_loop().call_later(heartbeat, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        sleeping.clear()
        notifier.drop_sleeper(name, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
