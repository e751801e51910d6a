"""With TETHER_API_KEYS, subscriptions live in their key's namespace, as streams do."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from helpers.server import TetherServer

from .harness import Api

KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[tuple[Api, Api]]:
    env = {**os.environ, "TETHER_API_KEYS": f"{KEY_A},{KEY_B}"}
    server = TetherServer(tmp_path / "data", env=env, extra_args=("--webhook-allow-loopback",))
    server.start()
    a, b = Api(server, KEY_A), Api(server, KEY_B)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()
        server.stop()


async def session(api: Api) -> str:
    async with httpx.AsyncClient(base_url=api.server.base_url, headers=api.http.headers) as c:
        response = await c.post("/v1/sessions", json={"title": "mine"})
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])


async def test_another_keys_subscription_does_not_exist(keys: tuple[Api, Api]) -> None:
    a, b = keys
    await a.create_stream("wake", [])
    config = {"type": "pull-wake", "pattern": "events/*", "wake_stream": "wake"}
    assert (await a.put_sub("s", config)).status_code == 201
    assert (await b.get_sub("s")).status_code == 404
    assert (await b.claim("s", "w")).status_code == 404
    assert (await b.http.delete("__ds/subscriptions/s")).status_code == 404
    assert (await a.get_sub("s")).status_code == 200
    # b's wake stream named "wake" is b's own: it does not exist yet.
    refused = await b.put_sub("s", config)
    assert refused.status_code == 400 and "wake_stream" in refused.json()["error"]["message"]
    async with httpx.AsyncClient() as anonymous:
        unauthenticated = await anonymous.get(a.server.stream_url("__ds/subscriptions/s"))
    assert unauthenticated.status_code == 401


async def test_a_pattern_never_links_another_keys_streams(keys: tuple[Api, Api]) -> None:
    a, b = keys
    await b.create_stream("events/theirs", {"n": 1})
    await a.create_stream("events/before", {"n": 1})
    await a.create_stream("wake", [])
    config = {"type": "pull-wake", "pattern": "**", "wake_stream": "wake"}
    assert (await a.put_sub("s", config)).status_code == 201
    await b.create_stream("events/later", {"n": 1})
    await a.create_stream("events/mine", {"n": 1})
    await a.wakes("wake")
    links = await a.links("s")
    assert sorted(links) == ["events/before", "events/mine"]


async def test_a_session_stream_only_for_the_key_that_owns_the_session(
    keys: tuple[Api, Api],
) -> None:
    a, b = keys
    mine, theirs = await session(a), await session(b)
    await a.create_stream("wake", [])
    config = {"type": "pull-wake", "wake_stream": "wake"}
    refused = await a.put_sub("s", {**config, "streams": [f"sessions/{theirs}"]})
    assert refused.status_code == 404
    assert (await a.put_sub("s", {**config, "streams": [f"sessions/{mine}"]})).status_code == 201
    added = await a.http.post(
        "__ds/subscriptions/s/streams", json={"streams": [f"sessions/{theirs}"]}
    )
    assert added.status_code == 404
    assert sorted(await a.links("s")) == [f"sessions/{mine}"]
    glob = await a.put_sub("g", {**config, "pattern": "sessions/*"})
    assert glob.status_code == 201
    assert sorted(await a.links("g")) == [f"sessions/{mine}"]
