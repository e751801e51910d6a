"""The Redis store's hot path: appends pipelined on a connection of their own.

Against a real redis-server: appends made at once must share round trips (what
lets 64 producers on Redis keep up with SQLite's group commit) and still be
applied in the order they were made.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from redis_server import RedisServer, running_redis
from tether.store import errors
from tether.store.base import AppendRequest, CreateRequest
from tether.store.redis import RedisStore

JSON = "application/json"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_server.url(), prefix=f"test-{uuid.uuid4().hex[:12]}:")
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


async def reads_processed(client: aioredis.Redis) -> int:
    """How many reads from its clients' sockets Redis has done so far."""
    return int((await client.info("stats"))["total_reads_processed"])


async def test_appends_made_at_once_share_round_trips_and_keep_their_order(
    redis_server: RedisServer, store: RedisStore
) -> None:
    producers = [f"p{i}" for i in range(64)]
    for path in [*producers, "one"]:
        await store.create(path, CreateRequest(JSON))
    await store.append("one", AppendRequest([b"-1"], JSON))  # (connected, scripts loaded)
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        before = await reads_processed(client)
        # 64 producers on streams of their own and 64 appends to one stream, all at once.
        await asyncio.gather(
            *(store.append(p, AppendRequest([b"{}"], JSON)) for p in producers),
            *(store.append("one", AppendRequest([str(i).encode()], JSON)) for i in range(64)),
        )
        reads = await reads_processed(client) - before - 1  # (the INFO command's own read)
    finally:
        await client.aclose()
    # One command per connection, as through a pool, would be 128 reads at least.
    assert reads <= 16, f"128 appends made at once took {reads} reads in Redis"
    res = await store.read("one", 0, 1 << 20)
    assert res.chunks == [b"-1", *(str(i).encode() for i in range(64))]


async def test_a_function_flush_fails_one_append_with_503_and_the_next_reloads_the_functions(
    redis_server: RedisServer, store: RedisStore
) -> None:
    """Nothing ran, yet the append is not retried: appends made at once behind it
    may have run, and retrying it would put it after them."""
    await store.create("s", CreateRequest(JSON))
    await store.append("s", AppendRequest([b"1"], JSON))
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await client.function_flush()
    finally:
        await client.aclose()
    with pytest.raises(errors.BackendUnavailable):
        await store.append("s", AppendRequest([b"lost"], JSON))
    await store.append("s", AppendRequest([b"2"], JSON))
    assert (await store.read("s", 0, 1 << 20)).chunks == [b"1", b"2"]


async def test_an_append_redis_does_not_answer_in_time_fails_with_503_and_the_next_one_works(
    redis_server: RedisServer,
) -> None:
    """The hot path bounds each append by the store's timeout: when Redis stops
    answering, the appends in flight fail (503) once the oldest is overdue, and the
    connection they were on is dropped, so the next append opens a new one."""
    store = RedisStore(
        redis_server.url(), prefix=f"test-{uuid.uuid4().hex[:12]}:", socket_timeout=0.3
    )
    await store.open()
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await store.create("s", CreateRequest(JSON))
        await store.append("s", AppendRequest([b"1"], JSON))
        await client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        began = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(store.append("s", AppendRequest([b"late"], JSON)) for _ in range(3)),
            return_exceptions=True,
        )
        waited = asyncio.get_running_loop().time() - began
        assert all(isinstance(r, errors.BackendUnavailable) for r in results), results
        assert 0.25 <= waited < 1.2, f"the appends failed after {waited:.2f} s"
        await client.execute_command("CLIENT", "UNPAUSE")
        await store.append("s", AppendRequest([b"2"], JSON))
        assert (await store.read("s", 0, 1 << 20)).chunks[-1] == b"2"
    finally:
        await client.aclose()
        await store.aclose()


async def test_appends_answered_in_time_are_never_cut_off_however_long_the_connection_is_busy(
    redis_server: RedisServer,
) -> None:
    """The timeout counts from each append's own write: a connection that carries
    appends for many times the timeout, each answered in time, drops none of them."""
    store = RedisStore(
        redis_server.url(), prefix=f"test-{uuid.uuid4().hex[:12]}:", socket_timeout=0.2
    )
    await store.open()
    try:
        await store.create("s", CreateRequest(JSON))
        loop = asyncio.get_running_loop()
        ends = loop.time() + 1.0
        n = 0

        async def producer() -> None:
            nonlocal n
            while loop.time() < ends:
                await store.append("s", AppendRequest([b"{}"], JSON))
                n += 1

        await asyncio.gather(*(producer() for _ in range(16)))  # (always one in flight)
        assert len((await store.read("s", 0, 1 << 22)).chunks) == n
    finally:
        await store.aclose()
