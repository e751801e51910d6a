"""Fold checkpoints with workers: the server writes them (it sees a worker's appends), a
worker reads those of the sessions it holds and writes none."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from helpers.session_events import Events
from tether.api.workers import worker_identity
from tether.runtime.names import lease_name
from tether.runtime.remote_store import RemoteSessions, RemoteStore
from tether.sessions import checkpoints
from workers.test_workers import new_session, send
from workers.worker_cluster import WORKER_KEY, cluster_of

EVERY = 10


async def test_a_worker_folds_from_the_servers_checkpoint_and_writes_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster_of(tmp_path, words=3 * EVERY) as cluster:
        server = await cluster.start_server("--fold-checkpoint-every", str(EVERY))
        await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c)
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "complete", cluster.logs()
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
        await asyncio.to_thread(cluster.workers[0].stop)

        store = RemoteStore(server.base_url, WORKER_KEY)
        await store.open()
        sessions = RemoteSessions(store)
        sessions.checkpoints.every = EVERY  # as often as the server's, so it would write one
        owner = worker_identity(WORKER_KEY) + "/test"
        try:
            assert await store.acquire_lease(lease_name(session_id), owner, 30)
            # Written by the server in the background, off the worker's appends.
            deadline = time.monotonic() + 15
            while await store.get_record(checkpoints.NAMESPACE, session_id) is None:
                assert time.monotonic() < deadline, cluster.logs()
                await asyncio.sleep(0.05)
            with caplog.at_level(logging.WARNING):
                state = await sessions.state(session_id)
                assert state.checkpointed >= EVERY  # restored from it, not folded from 0
                folded = [m["id"] for m in state.fold.snapshot()["messages"]]
                assert folded == [m["id"] for m in snap["messages"]]
                await sessions.aclose()  # would await a write of a checkpoint under way
            assert "could not checkpoint" not in caplog.text
        finally:
            await store.release_lease(lease_name(session_id), owner)
            await store.aclose()
