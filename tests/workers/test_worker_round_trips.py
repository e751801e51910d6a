"""How few worker API calls a worker makes to take a dispatched session, and the
``take`` operation that makes it few, under the worker API's rules.

Real processes: a ``tether serve`` child and a ``tether worker`` child at debug level,
whose log names each worker API call it makes (tether.runtime.remote_store).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from helpers.session_events import Events
from tether.api.workers import worker_identity
from workers.test_workers import new_session, send, stream_events
from workers.worker_cluster import API_KEY, OTHER_WORKER_KEY, WORKER_KEY, cluster_of

#: Calls from a claim to the append of the run's first events: the claim's ack, the take,
#: the fold's catch-up and the followers' first reads, with room for a heartbeat or a
#: wake stream's long-poll landing in between (there were twelve before ``take``).
MOST_CALLS_TO_FIRST_APPEND = 7


async def worker_call(
    c: httpx.AsyncClient, key: str, op: str, body: dict[str, Any]
) -> httpx.Response:
    return await c.post(f"/v1/worker/{op}", json=body, headers={"authorization": f"Bearer {key}"})


async def test_a_worker_takes_a_dispatched_session_in_a_few_calls(tmp_path: Path) -> None:
    """From its claim to its first append of the run, a worker makes at most
    ``MOST_CALLS_TO_FIRST_APPEND`` calls: the claim's answer holds the pending work, a
    ``take`` holds the lease and what the driver reads first (no ``lease_acquire``, no
    ``record_get``, no ``head`` before the fold's catch-up)."""
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server()
        worker = await cluster.start_worker("--log-level", "debug")
        async with cluster.client() as c:
            for _ in range(2):  # a first session, then one after the worker is warm
                session_id = await new_session(c)
                events = Events(c, session_id)
                mark = len(worker.output())
                run_id = await send(c, session_id)
                assert (await events.run_end(run_id))["reason"] == "complete", cluster.logs()
                await events.aclose()
                calls = re.findall(r"worker API call: (\w+)", worker.output()[mark:])
                assert "claim" in calls and "append_batch" in calls, calls
                taking = calls[calls.index("claim") + 1 : calls.index("append_batch")]
                assert len(taking) <= MOST_CALLS_TO_FIRST_APPEND, calls
                assert "take" in taking, calls
                assert not {"lease_acquire", "record_get"} & set(taking), calls
            log = await stream_events(c, session_id)
        assert [e["type"] for e in log].count("run-start") == 1


async def test_take_answers_what_a_driver_reads_first_only_to_the_new_lease_holder(
    tmp_path: Path,
) -> None:
    """``take`` is ``lease_acquire`` with, once the lease is the caller's, the session's
    record, checkpoint, head and first events: the same rules (404 for a session of an
    agent no worker serves, a lease owner named after the key) and nothing to a caller
    that did not get the lease."""
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server(api_key=True)
        async with cluster.client(API_KEY) as c:
            served = await new_session(c)  # no worker runs: nobody holds its lease
            await send(c, served)
            plain = await new_session(c, {"model": "demo"})
            me = worker_identity(WORKER_KEY) + "/test"
            other = worker_identity(OTHER_WORKER_KEY) + "/test"
            body = {"name": f"session:{plain}", "owner": me, "ttl": 30}
            assert (await worker_call(c, WORKER_KEY, "take", body)).status_code == 404
            body = {"name": f"session:{served}", "owner": other, "ttl": 30}
            assert (await worker_call(c, WORKER_KEY, "take", body)).status_code == 403
            body = {"name": f"answer:{served}:x", "owner": me, "ttl": 30}
            assert (await worker_call(c, WORKER_KEY, "take", body)).status_code == 400

            body = {"name": f"session:{served}", "owner": me, "ttl": 30}
            r = await worker_call(c, WORKER_KEY, "take", body)
            assert r.status_code == 200, r.text
            took = r.json()
            assert took["acquired"] is True
            assert orjson.loads(base64.b64decode(took["record"]))["id"] == served
            assert took["checkpoint"] is None  # a short session has none yet
            events = [orjson.loads(base64.b64decode(x)) for x in took["read"]["chunks"]]
            assert events and events == (await stream_events(c, served))[: len(events)]
            assert took["head"]["tail"] == took["read"]["next"] == len(events)

            body = {"name": f"session:{served}", "owner": other, "ttl": 30}
            r = await worker_call(c, OTHER_WORKER_KEY, "take", body)
            assert r.json() == {"acquired": False}  # held by another key: nothing else
