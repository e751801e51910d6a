"""Leases: one holder per name at a time, lapsing when the holder stops renewing.

The runtime decides which replica runs a session's runs with them, so the
same specification runs against the local stores (an in-process table) and
Redis (keys with PX expiry, on Redis's clock), where two stores on one Redis
stand in for two replicas.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from redis_server import RedisServer, running_redis
from tether.store.base import Store
from tether.store.memory import MemoryStore
from tether.store.redis import RedisStore
from tether.store.sqlite import SqliteStore

TTL = 0.3


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=("memory", "sqlite", "redis"))
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Two handles on one store: two Redis clients, or one local store twice."""
    handles: list[Store]
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"test-{uuid.uuid4().hex[:12]}:"
        handles = [RedisStore(server.url(), prefix=prefix) for _ in range(2)]
    else:
        local = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "t.db")
        handles = [local]
    for s in handles:
        await s.open()
    try:
        yield handles if len(handles) == 2 else handles * 2
    finally:
        for s in handles:
            await s.aclose()


async def test_a_free_lease_goes_to_exactly_one_of_many_racing_owners(stores: list[Store]) -> None:
    owners = [f"replica-{i}" for i in range(8)]
    won = await asyncio.gather(
        *(stores[i % 2].acquire_lease("job", o, 5) for i, o in enumerate(owners))
    )
    assert sum(won) == 1
    assert await stores[1].lease_holder("job") == owners[won.index(True)]


async def test_the_holder_may_acquire_again_and_others_may_not(stores: list[Store]) -> None:
    a, b = stores
    assert await a.acquire_lease("job", "A", 5)
    assert await a.acquire_lease("job", "A", 5)
    assert not await b.acquire_lease("job", "B", 5)
    assert await b.lease_holder("job") == "A"


async def test_a_lease_lapses_when_not_renewed_and_can_then_be_taken(stores: list[Store]) -> None:
    a, b = stores
    assert await a.acquire_lease("job", "A", TTL)
    await asyncio.sleep(TTL + 0.1)
    assert await b.lease_holder("job") is None
    assert await b.acquire_lease("job", "B", 5)
    assert await a.renew_leases(["job"], "A", 5) == ["job"]
    assert await a.lease_holder("job") == "B"


async def test_renewing_keeps_a_lease_past_its_first_ttl(stores: list[Store]) -> None:
    a, b = stores
    assert await a.acquire_lease("one", "A", TTL)
    assert await a.acquire_lease("two", "A", TTL)
    for _ in range(4):
        await asyncio.sleep(TTL / 3)
        assert await a.renew_leases(["one", "two"], "A", TTL) == []
    assert not await b.acquire_lease("one", "B", 5)
    assert await b.lease_holder("two") == "A"


async def test_a_lapsed_lease_is_lost_even_if_nobody_took_it(stores: list[Store]) -> None:
    a, _ = stores
    assert await a.acquire_lease("job", "A", TTL)
    await asyncio.sleep(TTL + 0.1)
    assert await a.renew_leases(["job", "never-held"], "A", 5) == ["job", "never-held"]
    assert await a.lease_holder("job") is None


async def test_release_frees_a_lease_but_only_for_its_holder(stores: list[Store]) -> None:
    a, b = stores
    assert await a.acquire_lease("job", "A", 5)
    await b.release_lease("job", "B")
    assert await b.lease_holder("job") == "A"
    await a.release_lease("job", "A")
    assert await b.acquire_lease("job", "B", 5)
