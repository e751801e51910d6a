"""Webhook subscriptions over a real server, SQLite file and HTTP receiver: signed wakes,
the synchronous ``{"done": true}`` auto-ack, callbacks, and retries after a failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpers.server import ServerFactory

from .harness import Api, Receiver, eventually, receiver_fixture
from .receiver import verify


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for state in receiver_fixture():
        yield state


@pytest.fixture
async def api(tether_server: ServerFactory) -> AsyncIterator[Api]:
    client = Api(tether_server(extra_args=("--webhook-allow-loopback",)))
    try:
        yield client
    finally:
        await client.aclose()


async def test_done_acks_the_snapshot_and_later_events_wake_again(
    api: Api, receiver: Receiver
) -> None:
    """The wake is signed with a key of the JWKS; {"done": true} acks the tails it named,
    and the next append makes a new wake (next generation, new wake id)."""
    receiver.default = (200, {"done": True})
    created = await api.put_sub("s", {"type": "webhook", "pattern": "events/*",
                                      "webhook": {"url": receiver.url}})  # fmt: skip
    assert created.status_code == 201
    jwks = (await api.http.get("__ds/jwks.json")).json()
    await api.create_stream("events/a", {"n": 1})
    first = await receiver.next()
    assert first.signature is not None and verify(first.raw, first.signature, jwks)
    assert first.body["generation"] == 1
    [stream] = first.body["streams"]
    assert (stream["path"], stream["has_pending"]) == ("events/a", True)
    tail = await api.append("events/a", {"n": 2})
    second = await receiver.next()
    assert second.body["generation"] == 2 and second.body["wake_id"] != first.body["wake_id"]
    assert second.body["streams"][0]["acked_offset"] == stream["tail_offset"]
    assert second.body["streams"][0]["tail_offset"] == tail


async def test_a_callback_with_done_acks_and_a_stale_one_is_fenced(
    api: Api, receiver: Receiver
) -> None:
    await api.put_sub("s", {"type": "webhook", "streams": ["events/a"],
                            "webhook": {"url": receiver.url}})  # fmt: skip
    await api.create_stream("events/a", {"n": 1})
    wake = (await receiver.next()).body
    tail = wake["streams"][0]["tail_offset"]
    ack = {"wake_id": wake["wake_id"], "generation": wake["generation"],
           "acks": [{"stream": "events/a", "offset": tail}]}  # fmt: skip
    beat = await api.ack("s", wake["callback_token"], ack, "callback")
    assert beat.json() == {"ok": True, "next_wake": False}
    finished = await api.ack("s", wake["callback_token"], {**ack, "done": True}, "callback")
    assert finished.json() == {"ok": True, "next_wake": False}
    stale = await api.ack("s", wake["callback_token"], {**ack, "done": True}, "callback")
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "FENCED"
    links = await api.links("s")
    assert links["events/a"]["acked_offset"] == wake["streams"][0]["tail_offset"]


async def test_a_failed_delivery_is_retried_and_the_status_says_so(
    api: Api, receiver: Receiver
) -> None:
    """A 503 answer: status failed with next_attempt_at; the retry (a new wake) succeeds
    and the status is active again."""
    receiver.answers = [(503, {})]
    receiver.default = (200, {"done": True})
    await api.put_sub("s", {"type": "webhook", "pattern": "events/*",
                            "webhook": {"url": receiver.url}})  # fmt: skip
    await api.create_stream("events/a", {"n": 1})
    failed = await receiver.next()
    retried = await receiver.next()
    assert retried.body["generation"] == failed.body["generation"] + 1
    first_acked = failed.body["streams"][0]["acked_offset"]

    async def recovered() -> bool:
        body = (await api.get_sub("s")).json()
        acked = body["streams"][0]["acked_offset"]
        return bool(body["status"] == "active" and acked != first_acked)

    await eventually(recovered, "the retry's auto-ack")  # lands just after the answer
    body = (await api.get_sub("s")).json()
    assert body["status"] == "active" and "next_attempt_at" not in body


async def test_the_failed_status_carries_the_persisted_retry_time(
    api: Api, receiver: Receiver
) -> None:
    receiver.default = (500, {})
    await api.put_sub("s", {"type": "webhook", "pattern": "events/*",
                            "webhook": {"url": receiver.url}})  # fmt: skip
    await api.create_stream("events/a", {"n": 1})
    await receiver.next()

    async def failed() -> bool:
        return bool((await api.get_sub("s")).json()["status"] == "failed")

    await eventually(failed, "status failed")
    body = (await api.get_sub("s")).json()
    assert body["status"] == "failed"
    assert body["next_attempt_at"].endswith("Z")


async def test_unsafe_webhook_urls_are_refused(api: Api) -> None:
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/", "ftp://example.com/"):
        response = await api.put_sub("s", {"type": "webhook", "pattern": "events/*",
                                           "webhook": {"url": url}})  # fmt: skip
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "WEBHOOK_URL_REJECTED"
    assert (await api.get_sub("s")).status_code == 404
