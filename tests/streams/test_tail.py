"""tail(): every batch once, in order, catching up and then live."""

from __future__ import annotations

import asyncio

from tether.store.base import AppendRequest, CreateRequest
from tether.store.memory import MemoryStore
from tether.streams.tail import tail


async def test_quiet_heartbeats_never_repeat_a_batch() -> None:
    store = MemoryStore()
    await store.create("s", CreateRequest("application/json", messages=[b"1", b"2"]))
    seen: list[tuple[int, list[bytes], int] | None] = []

    async def follow() -> None:
        async for batch in tail(store, "s", 0, heartbeat=0.02):
            seen.append(batch)
            if batch is not None and batch[2] == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)  # several heartbeats pass
    await store.append("s", AppendRequest([b"3"], "application/json"))
    await asyncio.wait_for(task, 2)
    batches = [b for b in seen if b is not None]
    assert batches == [(0, [b"1", b"2"], 2), (2, [b"3"], 3)]
    assert seen.count(None) >= 2


async def test_tail_ends_when_the_stream_closes() -> None:
    store = MemoryStore()
    await store.create("s", CreateRequest("text/plain"))
    got: list[bytes] = []

    async def follow() -> None:
        async for batch in tail(store, "s", 0, heartbeat=1):
            if batch is not None:
                got.extend(batch[1])

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.02)
    await store.append("s", AppendRequest([b"a"], "text/plain", close=True))
    await asyncio.wait_for(task, 2)
    assert got == [b"a"]


async def test_a_stop_wakes_a_waiting_reader_at_once() -> None:
    store = MemoryStore()
    await store.create("s", CreateRequest("text/plain"))
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def follow() -> list[object]:
        return [b async for b in tail(store, "s", 0, stop=stop, heartbeat=30)]

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.02)
    stop.set_result(None)
    assert await asyncio.wait_for(task, 1) == []
    assert not store.notifier._sleepers  # nothing left behind
    assert not stop._callbacks  # type: ignore[attr-defined]


class CountedStop(asyncio.Future[None]):
    """A stop future that counts the callbacks readers put on it."""

    added = 0

    def add_done_callback(self, fn, *, context=None):  # type: ignore[no-untyped-def]
        self.added += 1
        super().add_done_callback(fn, context=context)


async def test_a_reader_puts_one_callback_on_the_shared_stop_however_often_it_sleeps() -> None:
    """Every reader of a server shares its stop future; removing a callback scans them all."""
    store = MemoryStore()
    await store.create("s", CreateRequest("text/plain"))
    stop = CountedStop()
    got: list[bytes] = []

    async def follow() -> None:
        async for batch in tail(store, "s", 0, stop=stop, heartbeat=30):
            if batch is not None:
                got.extend(batch[1])

    task = asyncio.create_task(follow())
    for i in range(20):  # the reader sleeps before each
        await asyncio.sleep(0.001)
        await store.append("s", AppendRequest([b"%d " % i], "text/plain"))
    await asyncio.sleep(0.001)
    stop.set_result(None)
    await asyncio.wait_for(task, 1)
    assert len(got) == 20
    assert stop.added == 1
    assert not stop._callbacks  # type: ignore[attr-defined]


async def test_an_append_wakes_a_waiting_reader_in_the_next_loop_iteration() -> None:
    store = MemoryStore()
    await store.create("s", CreateRequest("text/plain"))
    woke: list[int] = []
    steps = 0

    async def follow() -> None:
        async for batch in tail(store, "s", 0, heartbeat=30):
            if batch is not None:
                woke.append(steps)
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.02)
    await store.append("s", AppendRequest([b"a"], "text/plain"))
    while not task.done():  # count the loop iterations until the reader has it
        steps += 1
        await asyncio.sleep(0)
    assert woke == [1]


async def test_readers_that_time_out_leave_no_sleepers_behind() -> None:
    store = MemoryStore()
    await store.create("s", CreateRequest("text/plain"))

    async def follow() -> int:
        beats = 0
        async for batch in tail(store, "s", 0, heartbeat=0.005):
            if batch is None:
                beats += 1
                if beats == 5:
                    break
        return beats

    assert await asyncio.wait_for(asyncio.gather(follow(), follow(), follow()), 2) == [5, 5, 5]
    assert not store.notifier._sleepers
