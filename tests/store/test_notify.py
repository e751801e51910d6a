"""Live tailing: the store's notifier, driven by real appends on both backends.

Every watched stream has one pending future. An append resolves it with one
``TailEvent`` (its positions, its data, and the next pending future), so one
append wakes any number of readers at once, and a reader that took the future
before reading follows the chain of events and sees every later append exactly
once, in order, however slowly it goes.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from tether.store.base import AppendRequest, CreateRequest, Producer
from tether.store.local import LocalStore
from tether.store.notify import TailEvent

BYTES = "application/octet-stream"
JSON = "application/json"


async def test_one_append_wakes_a_hundred_waiting_readers_with_one_shared_event(
    store: LocalStore,
) -> None:
    await store.create("s", CreateRequest(BYTES, messages=[b"old"]))
    notifier = store.notifier
    futures = []
    for _ in range(100):
        notifier.subscribe("s")
        futures.append(notifier.watch("s"))
    assert all(f is futures[0] for f in futures), "readers of a stream share one future"

    async def reader(fut: asyncio.Future[TailEvent]) -> TailEvent:
        return await fut

    readers = [asyncio.create_task(reader(f)) for f in futures]
    await asyncio.sleep(0)
    assert not any(r.done() for r in readers)

    await store.append("s", AppendRequest([b"new"], BYTES))
    events = await asyncio.wait_for(asyncio.gather(*readers), timeout=5)

    first = events[0]
    assert all(e is first for e in events), "one event object for every reader"
    assert (first.start, first.end, first.chunks, first.closed, first.deleted) == (
        3,
        6,
        [b"new"],
        False,
        False,
    )
    # Everyone continues from the same next link, which is now the pending one.
    assert not first.next.done()
    assert notifier.watch("s") is first.next
    for _ in range(100):
        notifier.unsubscribe("s")


@pytest.mark.parametrize("pace", ["interleaved", "all appends before the reader wakes"])
async def test_a_reader_that_watched_before_reading_sees_every_later_append_once_in_order(
    store: LocalStore, pace: str
) -> None:
    await store.create("s", CreateRequest(JSON, messages=[b"0", b"1"]))
    notifier = store.notifier
    notifier.subscribe("s")
    fut = notifier.watch("s")  # before reading, so nothing falls in between
    res = await store.read("s", 0, 1 << 20)
    seen, pos = list(res.chunks), res.next
    started = asyncio.Event()

    async def writer() -> None:
        if pace != "interleaved":
            await started.wait()
        for i in range(2, 60, 2):
            await store.append("s", AppendRequest([b"%d" % i, b"%d" % (i + 1)], JSON))
            if pace == "interleaved" and i % 6 == 0:
                await asyncio.sleep(0)
        await store.append("s", AppendRequest([], close=True))

    async def slow_reader() -> None:
        nonlocal fut, pos
        started.set()
        await asyncio.sleep(0.01)  # appends pile up while the reader is busy
        while True:
            event: TailEvent = await fut
            assert event.start == pos, "each event starts where the previous one ended"
            seen.extend(event.chunks)
            pos = event.end
            fut = event.next
            await asyncio.sleep(0.001)
            if event.closed:
                return

    await asyncio.wait_for(asyncio.gather(writer(), slow_reader()), timeout=10)
    notifier.unsubscribe("s")

    assert seen == [b"%d" % i for i in range(60)]
    assert pos == (await store.head("s")).tail == 60


async def test_an_append_between_watching_and_reading_shows_in_both_and_positions_tell(
    store: LocalStore,
) -> None:
    """The chain may repeat what a read already returned; the reader skips by position."""
    await store.create("s", CreateRequest(BYTES))
    notifier = store.notifier
    notifier.subscribe("s")
    fut = notifier.watch("s")
    await store.append("s", AppendRequest([b"raced"], BYTES))
    res = await store.read("s", 0, 1 << 20)
    assert (res.chunks, res.next) == ([b"raced"], 5)
    await store.append("s", AppendRequest([b"after"], BYTES))

    event = fut.result()
    assert (event.start, event.end) == (0, 5)  # already read: end <= res.next
    event = event.next.result()
    assert (event.start, event.end, event.chunks) == (5, 10, [b"after"])
    notifier.unsubscribe("s")


async def test_closing_is_announced_and_a_delete_ends_the_chain(store: LocalStore) -> None:
    await store.create("s", CreateRequest(BYTES, messages=[b"x"]))
    notifier = store.notifier
    notifier.subscribe("s")
    fut = notifier.watch("s")

    await store.append("s", AppendRequest([], close=True))
    closed = fut.result()
    assert (closed.start, closed.end, closed.chunks, closed.closed) == (1, 1, [], True)

    await store.delete("s")
    deleted = closed.next.result()
    assert deleted.deleted

    # A new stream at the same path starts a new chain; the old one never moves again.
    await store.create("s", CreateRequest(BYTES))
    fresh = notifier.watch("s")
    await store.append("s", AppendRequest([b"y"], BYTES))
    assert fresh.result().chunks == [b"y"]
    assert not deleted.next.done()
    notifier.unsubscribe("s")


async def test_a_recognised_duplicate_append_wakes_nobody(store: LocalStore) -> None:
    await store.create("s", CreateRequest(BYTES))
    notifier = store.notifier
    notifier.subscribe("s")
    req = AppendRequest([b"once"], BYTES, producer=Producer("w", 0, 0))
    await store.append("s", req)
    fut = notifier.watch("s")
    assert not (await store.append("s", req)).appended
    assert not fut.done()
    notifier.unsubscribe("s")


async def test_unsubscribing_the_last_watcher_cancels_the_pending_future_and_keeps_nothing(
    store: LocalStore,
) -> None:
    await store.create("s", CreateRequest(BYTES))
    notifier = store.notifier
    notifier.subscribe("s")
    notifier.subscribe("s")
    fut = notifier.watch("s")

    notifier.unsubscribe("s")
    assert notifier.watcher_count("s") == 1
    assert not fut.done(), "another watcher still waits on it"

    notifier.unsubscribe("s")
    assert notifier.watcher_count("s") == 0
    assert fut.cancelled()
    gone = weakref.ref(fut)
    del fut
    gc.collect()
    assert gone() is None, "the notifier keeps no reference to the stream's future"

    # Appending to a stream nobody watches is fine, and watching again starts afresh.
    await store.append("s", AppendRequest([b"x"], BYTES))
    notifier.subscribe("s")
    again = notifier.watch("s")
    assert not again.done()
    await store.append("s", AppendRequest([b"y"], BYTES))
    assert again.result().chunks == [b"y"]
    notifier.unsubscribe("s")
    assert again.result().next.cancelled()
