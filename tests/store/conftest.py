"""Fixtures shared by the store specifications.

Every store test runs against both single-process backends: ``MemoryStore`` and
``SqliteStore`` on a real file in ``tmp_path``. Time comes from a fake clock the
test advances by hand, so expiry is exact and nothing sleeps.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from redis_server import RedisServer, running_redis
from tether.store.base import Store
from tether.store.local import LocalStore
from tether.store.memory import MemoryStore
from tether.store.redis import RedisStore
from tether.store.sqlite import SqliteStore

BACKENDS = ("memory", "sqlite")
T0 = 1_700_000_000.0


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_store(backend: str, db: Path, clock: FakeClock) -> LocalStore:
    if backend == "memory":
        return MemoryStore(clock=clock)
    return SqliteStore(db, clock=clock)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(backend: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[LocalStore]:
    s = make_store(backend, tmp_path / "tether.db", clock)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=("memory", "sqlite", "redis"))
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every backend, Redis included (a real redis-server, a fresh key prefix per test)."""
    s: Store
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        s = RedisStore(server.url(), prefix=f"t-{random.getrandbits(32):x}:")
    else:
        s = make_store(request.param, tmp_path / "tether.db", FakeClock())
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()
