"""A worker's appends made at once go in one request, each fenced by its lease and in
order per session (a real server, the worker's own store over HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from tether.api.workers import worker_identity
from tether.runtime.names import lease_name
from tether.runtime.remote_store import RemoteStore
from tether.sessions.service import stream_name
from tether.store.base import AppendRequest
from tether.store.errors import LeaseLost
from workers.test_workers import new_session
from workers.worker_cluster import WORKER_KEY, cluster_of

SESSIONS = 8


def _event(session_id: str, n: int) -> bytes:
    return orjson.dumps({"type": "status", "status": "idle", "n": n, "s": session_id})


async def test_appends_made_at_once_share_requests_fenced_and_in_order(tmp_path: Path) -> None:
    async with cluster_of(tmp_path) as cluster:
        server = await cluster.start_server()
        async with cluster.client() as c:
            held = [await new_session(c) for _ in range(SESSIONS)]
            not_held = await new_session(c)
            tails = {s: (await c.get(f"/v1/stream/sessions/{s}", params={"offset": "-1"}))
                     .headers["stream-next-offset"] for s in held}  # fmt: skip
        store = RemoteStore(server.base_url, WORKER_KEY)
        await store.open()
        requests: list[str] = []

        async def count(request: httpx.Request) -> None:
            requests.append(request.url.path)

        store._client.event_hooks["request"].append(count)
        owner = worker_identity(WORKER_KEY) + "/test"
        try:
            for s in held:
                assert await store.acquire_lease(lease_name(s), owner, 30)
            requests.clear()

            async def three(s: str, lease_of: str) -> list[int]:
                # Not awaited one by one: all three are under way at once, as a run's
                # appends and another task's can be.
                lease = (lease_name(lease_of), owner)
                calls = [
                    store.append(stream_name(s), AppendRequest([_event(s, n)], "application/json",
                                                               lease=lease))
                    for n in range(3)
                ]  # fmt: skip
                return [r.tail for r in await asyncio.gather(*calls)]

            results = await asyncio.gather(*(three(s, s) for s in held))
            assert all(a < b < c for a, b, c in results)
            assert len(requests) < SESSIONS * 3 / 2, requests  # was one per append
            # Fenced each by its own lease: one refused does not refuse the others with it.
            fenced, ok = await asyncio.gather(
                three(not_held, not_held), three(held[0], held[0]), return_exceptions=True
            )
            assert isinstance(fenced, LeaseLost)
            assert isinstance(ok, list)
        finally:
            for s in held:
                await store.release_lease(lease_name(s), owner)
            await store.aclose()
        async with cluster.client() as c:
            for s in held:
                r = await c.get(f"/v1/stream/sessions/{s}", params={"offset": tails[s]})
                mine = [e["n"] for e in r.json() if e.get("s") == s]
                assert mine == [0, 1, 2] + ([0, 1, 2] if s == held[0] else []), mine


@pytest.mark.parametrize("body", [{"appends": "x"}, {"appends": [{}] * 257}])
async def test_a_bad_batch_is_refused(tmp_path: Path, body: dict[str, object]) -> None:
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server()
        async with cluster.client(WORKER_KEY) as w:
            r = await w.post("/v1/worker/append_batch", json=body)
            assert r.status_code == 400, r.text
