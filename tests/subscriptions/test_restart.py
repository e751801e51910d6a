"""Subscription state lives in the store: a killed server's successor on the same SQLite
file resumes a pending wake, a lease's expiry and a scheduled webhook retry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpers.server import ServerFactory, TetherServer

from .harness import Api, Receiver, eventually, receiver_fixture

ARGS = ("--webhook-allow-loopback",)
WAKE = "wake/pool"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for state in receiver_fixture():
        yield state


def restart(tether_server: ServerFactory, crashed: TetherServer) -> TetherServer:
    """SIGKILL ``crashed`` and start another server on its data dir and port."""
    crashed.kill()
    return tether_server(crashed.data_dir, port=crashed.port, extra_args=ARGS)


async def test_a_pending_wake_and_a_lease_expiry_survive_a_restart(
    tether_server: ServerFactory,
) -> None:
    first = tether_server(extra_args=ARGS)
    api = Api(first)
    await api.create_stream(WAKE, [])
    config = {"type": "pull-wake", "pattern": "events/*", "wake_stream": WAKE,
              "lease_ttl_ms": 1000}  # fmt: skip
    assert (await api.put_sub("s", config)).status_code == 201
    await api.create_stream("events/a", {"n": 1})
    _, offset = await api.wakes(WAKE)
    await api.aclose()

    api = Api(restart(tether_server, first))
    claim = await api.claim("s", "w1")
    assert claim.status_code == 200
    claimed = claim.json()
    assert claimed["generation"] == 1 and claimed["streams"][0]["has_pending"] is True

    second = api.server
    await api.aclose()
    api = Api(restart(tether_server, second))
    events, _ = await api.wakes(WAKE, offset)  # the lease ran out while no server was up
    assert [e["generation"] for e in events] == [2]
    await api.aclose()


async def test_a_scheduled_webhook_retry_survives_a_restart(
    tether_server: ServerFactory, receiver: Receiver
) -> None:
    receiver.answers = [(503, {})]
    receiver.default = (200, {"done": True})
    first = tether_server(extra_args=ARGS)
    api = Api(first)
    config = {"type": "webhook", "pattern": "events/*", "webhook": {"url": receiver.url}}
    assert (await api.put_sub("s", config)).status_code == 201
    await api.create_stream("events/a", {"n": 1})
    failed = await receiver.next()

    async def retry_scheduled() -> bool:
        return bool((await api.get_sub("s")).json()["status"] == "failed")

    await eventually(retry_scheduled, "status failed")
    await api.aclose()

    api = Api(restart(tether_server, first))
    retried = await receiver.next()  # no append since: only the persisted retry explains it
    assert retried.body["generation"] == failed.body["generation"] + 1
    assert retried.body["streams"][0]["path"] == "events/a"

    async def active() -> bool:
        return bool((await api.get_sub("s")).json()["status"] == "active")

    await eventually(active, "status active after the retry")
    await api.aclose()
