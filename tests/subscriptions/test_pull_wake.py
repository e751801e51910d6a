"""Pull-wake subscriptions over a real server and SQLite file: the rules of PROTOCOL.md
section 7, one by one (wakes, generations, claims, acks, releases, leases, fencing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers.server import ServerFactory

from .harness import Api

WAKE = "wake/pool"


@pytest.fixture
async def api(tether_server: ServerFactory) -> AsyncIterator[Api]:
    client = Api(tether_server(extra_args=("--webhook-allow-loopback",)))
    await client.create_stream(WAKE, [])
    try:
        yield client
    finally:
        await client.aclose()


async def subscribe(api: Api, sub_id: str = "sub", **extra: Any) -> dict[str, Any]:
    config = {"type": "pull-wake", "pattern": "events/*", "wake_stream": WAKE, **extra}
    response = await api.put_sub(sub_id, config)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def claim(api: Api, worker: str = "w1", sub_id: str = "sub") -> dict[str, Any]:
    response = await api.claim(sub_id, worker)
    assert response.status_code == 200, response.text
    return dict(response.json())


def done(claimed: dict[str, Any], acks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    if acks is None:
        acks = [{"stream": s["path"], "offset": s["tail_offset"]} for s in claimed["streams"]]
    return {
        "wake_id": claimed["wake_id"],
        "generation": claimed["generation"],
        "acks": acks,
        "done": True,
    }


async def test_each_wake_has_a_new_wake_id_and_the_next_generation(api: Api) -> None:
    """An append to a matching stream writes a wake event; after done, the next append
    writes another, one generation later, with another wake id."""
    await subscribe(api)
    await api.create_stream("events/a", {"n": 1})
    events, offset = await api.wakes(WAKE)
    assert events == [
        {"type": "wake", "subscription_id": "sub", "stream": "events/a", "generation": 1,
         "ts": events[0]["ts"]}
    ]  # fmt: skip
    first = await claim(api)
    assert first["generation"] == 1
    ack = await api.ack("sub", first["token"], done(first))
    assert ack.json() == {"ok": True, "next_wake": False}

    await api.append("events/a", {"n": 2})
    events, _ = await api.wakes(WAKE, offset)
    assert [e["generation"] for e in events] == [2]
    second = await claim(api)
    assert second["generation"] == 2
    assert second["wake_id"] != first["wake_id"]


async def test_a_second_worker_is_told_who_holds_the_lease(api: Api) -> None:
    await subscribe(api)
    await api.create_stream("events/a", {"n": 1})
    held = await claim(api, "w1")
    busy = await api.claim("sub", "w2")
    assert busy.status_code == 409
    assert busy.json()["error"] | {"message": ""} == {
        "code": "ALREADY_CLAIMED", "current_holder": "w1", "generation": held["generation"],
        "message": "",
    }  # fmt: skip


@pytest.mark.parametrize("stale", ["wake_id", "generation", "token"])
async def test_a_stale_wake_id_generation_or_token_is_fenced(api: Api, stale: str) -> None:
    """Ack and release answer 409 FENCED unless token, generation and wake id are the
    current wake's; the cursor does not move."""
    await subscribe(api)
    await api.create_stream("events/a", {"n": 1})
    claimed = await claim(api)
    body = done(claimed)
    token = claimed["token"]
    if stale == "wake_id":
        body["wake_id"] = "w_not-this-one"
    elif stale == "generation":
        body["generation"] = claimed["generation"] - 1
    else:
        token = token[:-4] + "AAAA"
    for op in ("ack", "release"):
        response = await api.ack("sub", token, body, op)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "FENCED"
    assert (await api.links("sub"))["events/a"]["acked_offset"] == claimed["streams"][0][
        "acked_offset"
    ]
    # The real holder still can.
    assert (await api.ack("sub", claimed["token"], done(claimed))).status_code == 200


async def test_an_ack_is_last_processed_inclusive(api: Api) -> None:
    """Acking offset N: the link's acked_offset is N, and only events after N are pending."""
    await subscribe(api)
    await api.create_stream("events/a", {"n": 1})
    middle = await api.append("events/a", {"n": 2})
    tail = await api.append("events/a", {"n": 3})
    claimed = await claim(api)
    assert claimed["streams"][0]["tail_offset"] == tail
    ack = await api.ack(
        "sub", claimed["token"], done(claimed, [{"stream": "events/a", "offset": middle}])
    )
    assert ack.json() == {"ok": True, "next_wake": True}
    assert (await api.links("sub"))["events/a"]["acked_offset"] == middle
    again = await claim(api)
    stream = again["streams"][0]
    assert (stream["acked_offset"], stream["tail_offset"], stream["has_pending"]) == (
        middle, tail, True,
    )  # fmt: skip
    read = await api.http.get("events/a", params={"offset": middle})
    assert read.json() == [{"n": 3}]


async def test_an_ack_without_done_is_a_heartbeat(api: Api) -> None:
    """Heartbeats keep the claim past the lease's first end: another worker is still
    refused, and the holder's token still finishes the wake."""
    await subscribe(api, lease_ttl_ms=1000)
    await api.create_stream("events/a", {"n": 1})
    claimed = await claim(api)
    body = {"wake_id": claimed["wake_id"], "generation": claimed["generation"], "acks": []}
    loop = asyncio.get_running_loop()
    ends = loop.time() + 1.6  # past the first lease's end; time passing is what is tested
    while loop.time() < ends:
        beat = await api.ack("sub", claimed["token"], body)
        assert beat.json() == {"ok": True, "next_wake": False}
        await asyncio.sleep(0.2)
    assert (await api.claim("sub", "w2")).json()["error"]["current_holder"] == "w1"
    assert (await api.ack("sub", claimed["token"], done(claimed))).status_code == 200


async def test_release_with_pending_work_writes_another_wake(api: Api) -> None:
    await subscribe(api)
    await api.create_stream("events/a", {"n": 1})
    events, offset = await api.wakes(WAKE)
    claimed = await claim(api)
    body = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
    released = await api.ack("sub", claimed["token"], body, "release")
    assert released.status_code == 204
    events, _ = await api.wakes(WAKE, offset)
    assert [e["generation"] for e in events] == [claimed["generation"] + 1]
    # The released token is over.
    again = await api.ack("sub", claimed["token"], body, "release")
    assert again.json()["error"]["code"] == "FENCED"


async def test_an_expired_lease_clears_the_holder_and_wakes_again(api: Api) -> None:
    """With pending work, the lease's end writes a new wake; the old token is fenced and
    another worker may claim."""
    await subscribe(api, lease_ttl_ms=1000)
    await api.create_stream("events/a", {"n": 1})
    _, offset = await api.wakes(WAKE)
    claimed = await claim(api, "w1")
    events, _ = await api.wakes(WAKE, offset)  # written when the lease ran out
    assert [e["generation"] for e in events] == [claimed["generation"] + 1]
    late = await api.ack("sub", claimed["token"], done(claimed))
    assert late.status_code == 409 and late.json()["error"]["code"] == "FENCED"
    other = await claim(api, "w2")
    assert other["generation"] == claimed["generation"] + 1


async def test_existing_streams_are_linked_at_their_tail_and_new_ones_at_their_start(
    api: Api,
) -> None:
    """Backfill does not replay history; a stream created later counts from its first event."""
    await api.create_stream("events/old", {"n": 1})
    old_tail = await api.append("events/old", {"n": 2})
    await api.create_stream("other/x", {"n": 1})
    await subscribe(api)
    links = await api.links("sub")
    assert links == {
        "events/old": {"path": "events/old", "link_type": "glob", "acked_offset": old_tail}
    }
    await api.create_stream("events/new", {"n": 1})
    await api.wakes(WAKE)
    claimed = await claim(api)
    pending = {s["path"]: s["acked_offset"] for s in claimed["streams"] if s["has_pending"]}
    assert pending == {"events/new": "0000000000000000_0000000000000000"}


async def test_explicit_beats_glob_and_removing_it_keeps_the_glob_link(api: Api) -> None:
    await api.create_stream("events/a", {"n": 1})
    await subscribe(api, streams=["events/a", "manual/b"])
    links = await api.links("sub")
    assert {p: s["link_type"] for p, s in links.items()} == {
        "events/a": "explicit", "manual/b": "explicit",
    }  # fmt: skip
    for path in ("events%2Fa", "manual%2Fb", "manual%2Fb"):  # the last: idempotent
        removed = await api.http.delete(f"__ds/subscriptions/sub/streams/{path}")
        assert removed.status_code == 204
    links = await api.links("sub")
    assert {p: s["link_type"] for p, s in links.items()} == {"events/a": "glob"}
    added = await api.http.post("__ds/subscriptions/sub/streams", json={"streams": ["events/a"]})
    assert added.status_code == 204
    assert (await api.links("sub"))["events/a"]["link_type"] == "explicit"


async def test_create_re_confirm_conflict_and_delete(api: Api) -> None:
    config = {"type": "pull-wake", "streams": ["b", "a", "a"], "wake_stream": WAKE}
    assert (await api.put_sub("s", config)).status_code == 201
    same = {**config, "streams": ["a", "b"]}  # normalized: the same configuration
    assert (await api.put_sub("s", same)).status_code == 200
    other = await api.put_sub("s", {**config, "description": "changed"})
    assert other.status_code == 409
    assert (await api.http.delete("__ds/subscriptions/s")).status_code == 204
    assert (await api.get_sub("s")).status_code == 404
    assert (await api.put_sub("s", {**config, "description": "changed"})).status_code == 201


async def test_a_deleted_subscription_refuses_its_in_flight_ack(api: Api) -> None:
    await subscribe(api)
    await api.create_stream("events/a", {"n": 1})
    claimed = await claim(api)
    assert (await api.http.delete("__ds/subscriptions/sub")).status_code == 204
    late = await api.ack("sub", claimed["token"], done(claimed))
    assert late.status_code == 409 and late.json()["error"]["code"] == "FENCED"


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"pattern": "events/*", "wake_stream": WAKE}, "type is required"),
    ({"type": "pull-wake", "wake_stream": WAKE}, "give a pattern, streams, or both"),
    ({"type": "pull-wake", "pattern": "events/*", "wake_stream": WAKE, "lease_ttl_ms": 999},
     "lease_ttl_ms must be from 1000"),
    ({"type": "pull-wake", "pattern": "events/*", "wake_stream": WAKE,
      "lease_ttl_ms": 600_001}, "lease_ttl_ms must be from 1000"),
    ({"type": "pull-wake", "pattern": "events/a**", "wake_stream": WAKE},
     "'**' must be a whole path segment"),
    ({"type": "pull-wake", "pattern": "events//*", "wake_stream": WAKE}, "empty path segment"),
    ({"type": "pull-wake", "pattern": "events/*"}, "needs wake_stream"),
    ({"type": "pull-wake", "pattern": "events/*", "wake_stream": "wake/missing"},
     "wake_stream does not exist"),
    ({"type": "webhook", "pattern": "events/*"}, "needs webhook.url"),
    ({"type": "poll", "pattern": "events/*"}, "type must be"),
]  # fmt: skip


async def test_bad_configurations_are_refused_with_a_clear_message(api: Api) -> None:
    """400, a message naming what is wrong, and nothing created (one server for all cases)."""
    for config, message in BAD_CONFIGS:
        response = await api.put_sub("bad", config)
        assert response.status_code == 400, (config, response.text)
        assert message in response.json()["error"]["message"], config
        assert (await api.get_sub("bad")).status_code == 404
