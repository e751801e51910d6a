"""A worker-served run suspended on a wait that expires ends as an in-process run's does."""

from __future__ import annotations

from pathlib import Path

from helpers.session_events import Events
from workers.test_workers import new_session, send, stream_events
from workers.worker_cluster import cluster_of

#: Past the worker's suspend-after (2 s): the run is suspended, its task gone, when it expires.
EXPIRES_IN = 3.0


async def test_an_expired_wait_of_a_worker_served_run_ends_the_run(tmp_path: Path) -> None:
    async with cluster_of(tmp_path) as cluster:
        cluster.env["TETHER_TEST_EXPIRES_IN"] = str(EXPIRES_IN)
        await cluster.start_server()
        await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c, {"agent": "tools"})
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            suspend = await events.until(lambda e: e["type"] == "run-suspend")
            assert suspend["waiting"][0]["for"] == "approval"
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "error", cluster.logs()
            log = await stream_events(c, session_id)
            [error] = [e for e in log if e["type"] == "error" and e.get("run_id") == run_id]
            assert error["code"] == "wait_expired" and "approval" in error["message"]
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            assert snap["status"] == "error"  # as an in-process run's failure leaves it
