"""Two servers on one real Redis: a subscription made on one is served by both, each
wake is delivered once, and of two workers claiming on different replicas one wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from helpers.server import ServerFactory
from redis_server import RedisServer, running_redis

from .harness import Api, Delivery, Receiver, eventually, receiver_fixture

ARGS = ("--webhook-allow-loopback",)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for state in receiver_fixture():
        yield state


@pytest.fixture
async def replicas(
    tether_server: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[Api, Api]]:
    url = redis_server.url(0)
    a = Api(tether_server(tmp_path / "a", store=url, extra_args=ARGS))
    b = Api(tether_server(tmp_path / "b", store=url, extra_args=ARGS))
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_each_wake_is_delivered_once_across_two_replicas(
    replicas: tuple[Api, Api], receiver: Receiver
) -> None:
    a, b = replicas
    receiver.default = (200, {"done": True})
    config = {"type": "webhook", "pattern": "events/*", "webhook": {"url": receiver.url}}
    assert (await a.put_sub("s", config)).status_code == 201
    # Replica b learns of the subscription from the store; its first matching append
    # after that makes a wake.
    await b.create_stream("events/warm", {"n": 0})
    deliveries: list[Delivery] = []
    n = 0
    while not deliveries:
        n += 1
        await b.append("events/warm", {"n": n})
        try:
            deliveries.append(await receiver.next(timeout=0.5))
        except TimeoutError:
            continue

    paths = [f"events/s{i}" for i in range(4)]
    for path in paths:
        await a.create_stream(path, {"n": 0})
    tails = {}
    for i in range(40):
        api = a if i % 2 else b
        path = paths[i % len(paths)]
        tails[path] = await api.append(path, {"n": i})

    async def all_acked() -> bool:
        while not receiver.deliveries.empty():
            deliveries.append(receiver.deliveries.get_nowait())
        links = await a.links("s")
        return all(links[p]["acked_offset"] == tail for p, tail in tails.items())

    await eventually(all_acked, "every append acked through auto-acked wakes")
    while not receiver.deliveries.empty():
        deliveries.append(receiver.deliveries.get_nowait())
    wake_ids = [d.body["wake_id"] for d in deliveries]
    generations = [d.body["generation"] for d in deliveries]
    assert len(set(wake_ids)) == len(wake_ids), "a wake was delivered twice"
    assert len(set(generations)) == len(generations), "a generation was delivered twice"
    assert receiver.count == len(deliveries)


async def test_two_workers_claiming_on_two_replicas_get_one_lease(
    replicas: tuple[Api, Api],
) -> None:
    a, b = replicas
    await a.create_stream("wake", [])
    config = {"type": "pull-wake", "streams": ["events/a"], "wake_stream": "wake"}
    assert (await a.put_sub("s", config)).status_code == 201
    await a.create_stream("events/a", {"n": 1})
    for round_ in range(5):
        first, second = await asyncio.gather(a.claim("s", "wa"), b.claim("s", "wb"))
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 409], (round_, first.text, second.text)
        winner = first if first.status_code == 200 else second
        claimed = winner.json()
        body = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
        assert (await a.ack("s", claimed["token"], body, "release")).status_code == 204
