"""Follow a stream from a position: catch up from the store, then go live.

Yields ``(start, chunks, next)`` batches in order, exactly once each, and
``None`` when ``heartbeat`` seconds pass quietly (so a caller can keep its
connection warm). Ends when the stream closes or is deleted, or ``stop``
resolves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tether.store.base import Store

Batch = tuple[int, list[bytes], int]


async def tail(
    store: Store,
    name: str,
    position: int,
    *,
    stop: asyncio.Future[None] | None = None,
    heartbeat: float = 15.0,
    chunk: int = 1024 * 1024,
) -> AsyncIterator[Batch | None]:
    notifier = store.notifier
    notifier.subscribe(name)
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
            if not res.up_to_date:
                continue
            # Live: follow the chain until it gets out of step with ``position``.
            while True:
                if not fut.done():
                    # (Skipped when the next append is already there: asyncio.wait
                    # costs a set, a timer and callbacks, per event, under load.)
                    waiting: tuple[asyncio.Future[object], ...] = (
                        (fut,) if stop is None else (fut, stop)
                    )
                    await asyncio.wait(
                        waiting, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                    )
                if stop is not None and stop.done():
                    return
                if not fut.done():
                    yield None
                    continue
                if fut.cancelled():
                    return
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
        notifier.unsubscribe(name)
