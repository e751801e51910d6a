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
