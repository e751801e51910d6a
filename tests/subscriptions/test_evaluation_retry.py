"""An append's evaluation that the store fails is retried: the wake still comes.

The failure is real: Redis stops while the evaluation waits for the
subscription's lock (held by another replica), and starts again after.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis

from helpers.server import ServerFactory
from redis_server import RedisServer

from .harness import WAIT, Api

WAKE = "wakes"


def _db(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


async def test_an_evaluation_the_store_failed_is_retried_and_wakes(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        api = Api(tether_server(tmp_path / "data", store=redis_server.url(0)))
        try:
            await api.create_stream("events/a")
            await api.create_stream(WAKE)
            config = {"type": "pull-wake", "streams": ["events/a"], "wake_stream": WAKE}
            assert (await api.put_sub("s", config)).status_code == 201
            with _db(redis_server) as db:
                [key] = [k.decode() for k in db.hkeys("tether:r:ds-subscriptions")]
                # Another replica holds the subscription's lock: the evaluation waits.
                db.set(f"tether:l:ds-subscription:{key}", "another-replica", px=60_000)
            await api.append("events/a", {"n": 1})
            await asyncio.to_thread(redis_server.stop)
            deadline = time.monotonic() + WAIT
            while "evaluation failed" not in api.server.output():
                assert time.monotonic() < deadline, api.server.output()
                await asyncio.sleep(0.05)
            await asyncio.to_thread(redis_server.start)
            with _db(redis_server) as db:
                db.delete(f"tether:l:ds-subscription:{key}")
            # No wake was issued and no retry scheduled: only the retry brings this wake.
            events, _ = await api.wakes(WAKE)
            assert [e["type"] for e in events] == ["wake"]
            assert events[0]["stream"] == "events/a"
        finally:
            await api.aclose()
    finally:
        redis_server.stop()
