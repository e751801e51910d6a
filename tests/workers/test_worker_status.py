"""A session whose run waits for a worker says so in the listing and the SDK too."""

from __future__ import annotations

from pathlib import Path

from helpers.session_events import Events
from tether.client import AsyncTether
from workers.test_workers import new_session, send
from workers.worker_cluster import cluster_of


async def test_a_waiting_session_is_waiting_in_the_listing_and_the_sdk(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, words=3) as cluster:
        server = await cluster.start_server("--lease-ttl", "2")
        async with cluster.client() as c, AsyncTether(server.base_url) as sdk:
            waiting = await new_session(c)
            idle = await new_session(c, {"model": "demo"})
            events = Events(c, waiting)
            run_id = await send(c, waiting)
            listed = {
                s["id"]: s["status"] for s in (await c.get("/v1/sessions")).json()["sessions"]
            }
            assert listed[waiting] == "waiting"
            assert listed[idle] == "idle"
            assert {s.id: s.status for s in await sdk.sessions.list()}[waiting] == "waiting"
            assert (await sdk.sessions.get(waiting)).status == "waiting"
            await cluster.start_worker()
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "complete", cluster.logs()
            # Served now (its record's status is the worker's to note, just after the end).
            listed = {
                s["id"]: s["status"] for s in (await c.get("/v1/sessions")).json()["sessions"]
            }
            assert listed[waiting] != "waiting"
