"""The floor of the Redis store's appends: tether with one bare round trip to Redis per append.

bench_streams.py's target ``floor-redis`` runs ``tether serve`` on the memory
store, each append followed by one PING to a redis-server of its own, on one
connection written and read as the Redis store's appends' is
(``redis_wire.RawConnection``). An append on the Redis store is answered only
once Redis has answered it, so no build of the Redis store appends faster one
at a time than this does on the same machine: the gap between ``tether-redis``
and ``floor-redis`` is what the Redis store itself costs (its function in
Redis, the arguments and the reply, its notifications) beyond the round trip.

Usage: ``python floor_redis.py REDIS_URL serve [tether serve's options]``, with
``--store memory`` among them.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tether.cli import main as cli
from tether.store.base import AppendRequest, AppendResult, Store
from tether.store.memory import MemoryStore
from tether.store.redis_wire import RawConnection, pack

_PING = pack("PING")


class RoundTripMemoryStore(MemoryStore):
    """The memory store, plus one round trip to Redis per append (pipelined, in order)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._raw: RawConnection | None = None
        #: Appends waiting for their PONG, oldest first.
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def open(self) -> None:
        await super().open()
        pool = aioredis.ConnectionPool.from_url(self._url)
        self._raw = await RawConnection.open(pool, self._answered, self._lost)

    def _answered(self, replies: list[Any]) -> None:
        for _ in replies:
            self._waiting.popleft().set_result(None)

    def _lost(self) -> None:
        while self._waiting:
            self._waiting.popleft().set_exception(ConnectionError("Redis went away"))

    async def append(self, path: str, req: AppendRequest) -> AppendResult:
        result = await super().append(path, req)
        assert self._raw is not None
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        self._raw.write(_PING)
        await answer
        return result

    async def aclose(self) -> None:
        if self._raw is not None:
            self._raw.close()
            await self._raw.wait_closed()
            self._raw = None
        await super().aclose()


def main() -> None:
    url = sys.argv.pop(1)
    opened = cli.open_store

    def open_store(spec: str, data_dir: Path, *args: Any) -> Store:
        return RoundTripMemoryStore(url) if spec == "memory" else opened(spec, data_dir, *args)

    cli.open_store = open_store  # type: ignore[assignment]
    sys.argv[0] = "tether"
    cli.main()


if __name__ == "__main__":
    main()
