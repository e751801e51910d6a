"""tether workers over real processes: ``tether serve`` and ``tether worker`` children.

The server is configured with worker keys and the worker-served agent
``words`` (tests/workers/apps/worker_app.py), which it never runs itself;
the workers run it through the worker API.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from helpers.session_events import Events
from redis_server import RedisServer, running_redis
from tether.api.workers import worker_identity
from workers.worker_cluster import API_KEY, OTHER_WORKER_KEY, WORKER_KEY, cluster_of

WORDS = {"agent": "words"}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


async def send(c: httpx.AsyncClient, session_id: str, text: str = "go") -> str:
    r = await c.post(f"/v1/sessions/{session_id}/messages", json={"content": text})
    assert r.status_code == 202, r.text
    run_id: str = r.json()["run_id"]
    return run_id


async def new_session(c: httpx.AsyncClient, body: dict[str, Any] = WORDS) -> str:
    r = await c.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    session_id: str = r.json()["id"]
    return session_id


async def stream_events(c: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    r = await c.get(f"/v1/stream/sessions/{session_id}", params={"offset": "-1"})
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()
    return events


def answer_text(events: list[dict[str, Any]], run_id: str) -> str:
    """The run's answer as a reader folds it: deltas of parts a retry did not discard."""
    discarded = {p for e in events if e["type"] == "retry" for p in e.get("discard", [])}
    return "".join(
        e["delta"]
        for e in events
        if e["type"] == "part-delta" and e["run_id"] == run_id and e["part_id"] not in discarded
    )


async def test_a_worker_serves_a_run_end_to_end(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, words=3) as cluster:
        await cluster.start_server()
        worker = await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c)
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "complete", cluster.logs()
            log = await stream_events(c, session_id)
            start = next(e for e in log if e["type"] == "run-start")
            assert start["worker"].startswith(worker_identity(WORKER_KEY) + "/")
            assert f":{worker.pid}:" in start["worker"]
            assert answer_text(log, run_id) == "w0 w1 w2 "
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            assert snap["status"] == "idle"
            assert snap["messages"][-1]["role"] == "assistant"
        assert WORKER_KEY not in cluster.logs()


async def test_server_tools_run_on_the_worker_and_answers_reach_it(tmp_path: Path) -> None:
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server()
        worker = await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c, {"agent": "tools"})
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            await events.until(
                lambda e: e["type"] == "part-start" and e.get("tool_call_id") == "call_add"
            )
            r = await c.post(
                f"/v1/sessions/{session_id}/tool-approvals",
                json={"tool_call_id": "call_add", "approved": True},
            )
            assert r.status_code == 202, r.text
            r = await c.post(
                f"/v1/sessions/{session_id}/tool-results",
                json={"tool_call_id": "call_add", "output": 3},
            )
            assert r.status_code == 202, r.text
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "complete", cluster.logs()
            log = await stream_events(c, session_id)
            assert answer_text(log, run_id) == f"where: {worker.pid}; add: 3"


async def test_a_run_waits_for_a_worker_and_the_session_says_so(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, words=3) as cluster:
        await cluster.start_server("--lease-ttl", "2")
        async with cluster.client() as c:
            session_id = await new_session(c)
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            assert snap["status"] == "waiting"
            await cluster.start_worker()  # the queued run is dispatched again, to it
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "complete", cluster.logs()
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            assert snap["status"] == "idle"


async def _worker_call(
    c: httpx.AsyncClient, key: str, op: str, body: dict[str, Any]
) -> httpx.Response:
    return await c.post(f"/v1/worker/{op}", json=body, headers={"authorization": f"Bearer {key}"})


async def test_a_worker_key_reaches_only_the_sessions_whose_lease_it_holds(
    tmp_path: Path,
) -> None:
    async with cluster_of(tmp_path) as cluster:
        await cluster.start_server(api_key=True)
        async with cluster.client(API_KEY) as c:
            served = await new_session(c)  # no worker runs: nobody holds its lease
            plain = await new_session(c, {"model": "demo"})
            await send(c, plain)
            me = worker_identity(WORKER_KEY) + "/test"
            other = worker_identity(OTHER_WORKER_KEY) + "/test"
            event = base64.b64encode(orjson.dumps({"type": "status", "status": "idle"})).decode()

            def append(session_id: str, owner: str) -> dict[str, Any]:
                return {
                    "path": f"sessions/{session_id}", "messages": [event],
                    "content_type": "application/json", "lease": [f"session:{session_id}", owner],
                }  # fmt: skip

            # Not holding the lease: appending is refused, reading finds nothing.
            r = await _worker_call(c, WORKER_KEY, "append", append(served, me))
            assert r.status_code == 403, r.text
            for session_id in (served, plain):
                body = {"path": f"sessions/{session_id}", "offset": 0}
                r = await _worker_call(c, WORKER_KEY, "read", body)
                assert r.status_code == 404, r.text
                r = await _worker_call(c, WORKER_KEY, "head", {"path": f"sessions/{session_id}"})
                assert r.status_code == 404, r.text
                body = {"namespace": "sessions", "key": session_id}
                assert (await _worker_call(c, WORKER_KEY, "record_get", body)).status_code == 404
            # Another session's run record is not the holder's to replace or delete.
            other_session = await new_session(c)
            other_run = await send(c, other_session)
            held = {"name": f"session:{served}", "owner": me, "ttl": 30}
            assert (await _worker_call(c, WORKER_KEY, "lease_acquire", held)).json()["acquired"]
            record = base64.b64encode(orjson.dumps({"session_id": served})).decode()
            body = {"namespace": "runs", "key": other_run, "value": record}
            assert (await _worker_call(c, WORKER_KEY, "record_put", body)).status_code == 404
            body = {"namespace": "runs", "key": other_run}
            assert (await _worker_call(c, WORKER_KEY, "record_delete", body)).status_code == 404
            body = {"name": f"session:{served}", "owner": me}
            assert (await _worker_call(c, WORKER_KEY, "lease_release", body)).status_code == 200
            # A session of an agent no worker serves: its lease is not a worker's to take.
            body = {"name": f"session:{plain}", "owner": me, "ttl": 5}
            assert (await _worker_call(c, WORKER_KEY, "lease_acquire", body)).status_code == 404
            # Holding the lease, the key reads and appends; another worker key still cannot.
            body = {"name": f"session:{served}", "owner": me, "ttl": 30}
            r = await _worker_call(c, WORKER_KEY, "lease_acquire", body)
            assert r.json() == {"acquired": True}
            r = await _worker_call(c, WORKER_KEY, "append", append(served, me))
            assert r.status_code == 200, r.text
            r = await _worker_call(
                c, WORKER_KEY, "read", {"path": f"sessions/{served}", "offset": 0}
            )
            assert r.status_code == 200
            r = await _worker_call(c, OTHER_WORKER_KEY, "append", append(served, other))
            assert r.status_code == 403, r.text
            r = await _worker_call(c, OTHER_WORKER_KEY, "append", append(served, me))
            assert r.status_code == 403, r.text  # naming another key's worker does not help
            body = {"path": f"sessions/{served}", "offset": 0}
            assert (await _worker_call(c, OTHER_WORKER_KEY, "read", body)).status_code == 404
            # A worker key is no API key, and an API key is no worker key.
            async with cluster.client(WORKER_KEY) as w:
                assert (await w.get(f"/v1/sessions/{served}")).status_code == 401
                assert (await w.get(f"/v1/stream/sessions/{plain}")).status_code == 401
            body = {"path": f"sessions/{served}", "offset": 0}
            assert (await _worker_call(c, API_KEY, "read", body)).status_code == 401
        assert WORKER_KEY not in cluster.logs()


async def test_a_cancel_posted_to_the_server_stops_the_run_on_the_worker(
    tmp_path: Path,
) -> None:
    async with cluster_of(tmp_path, words=2000, delay=0.02) as cluster:
        await cluster.start_server()
        await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c)
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            await events.until(lambda e: e["type"] == "part-delta" and e["delta"] == "w3 ")
            asked = time.monotonic()
            r = await c.post(f"/v1/sessions/{session_id}/cancel", json={"run_id": run_id})
            assert r.status_code == 202, r.text
            end = await events.run_end(run_id)
            took = time.monotonic() - asked
            await events.aclose()
            assert end["reason"] == "cancelled"
            assert took < 0.3, f"the run ended {took * 1000:.0f} ms after the cancel was posted"


async def test_a_killed_workers_run_is_taken_over_by_another_from_its_journal(
    tmp_path: Path, redis: RedisServer
) -> None:
    lease_ttl = 2.0
    async with cluster_of(tmp_path, words=30, delay=0.1, redis=redis) as cluster:
        await cluster.start_server("--lease-ttl", str(lease_ttl))
        first = await cluster.start_worker()
        second = await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c)
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            start = await events.until(lambda e: e["type"] == "run-start")
            await events.until(lambda e: e["type"] == "part-delta" and e["delta"] == "w5 ")
            victim, heir = (
                (first, second) if f":{first.pid}:" in start["worker"] else (second, first)
            )
            await asyncio.to_thread(victim.kill)
            killed = time.monotonic()
            resumed = await events.until(lambda e: e["type"] == "run-resume", timeout=30)
            took = time.monotonic() - killed
            end = await events.run_end(run_id)
            await events.aclose()
            assert f":{heir.pid}:" in resumed["worker"]
            # Within the lease time, plus the reaper's look (1 s) and a margin for a loaded machine.
            assert took < lease_ttl + 1.0 + 2.0, f"taken over after {took:.1f} s"
            assert end["reason"] == "complete", cluster.logs()
            log = await stream_events(c, session_id)
            assert len({e["id"] for e in log}) == len(log)  # no event twice
            assert [e["type"] for e in log].count("run-end") == 1
            assert answer_text(log, run_id) == "".join(f"w{i} " for i in range(30))
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            text = "".join(p.get("text", "") for p in snap["messages"][-1]["parts"])
            assert text == "".join(f"w{i} " for i in range(30))


async def test_a_stopped_worker_hands_its_run_to_another(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, words=30, delay=0.1) as cluster:
        await cluster.start_server("--lease-ttl", "2")
        first = await cluster.start_worker()
        second = await cluster.start_worker()
        async with cluster.client() as c:
            session_id = await new_session(c)
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            start = await events.until(lambda e: e["type"] == "run-start")
            await events.until(lambda e: e["type"] == "part-delta" and e["delta"] == "w5 ")
            stopping, heir = (
                (first, second) if f":{first.pid}:" in start["worker"] else (second, first)
            )
            await asyncio.to_thread(stopping.stop)  # SIGTERM: it lets the lease go
            resumed = await events.until(lambda e: e["type"] == "run-resume", timeout=30)
            end = await events.run_end(run_id)
            await events.aclose()
            assert f":{heir.pid}:" in resumed["worker"]
            assert end["reason"] == "complete", cluster.logs()
            log = await stream_events(c, session_id)
            assert answer_text(log, run_id) == "".join(f"w{i} " for i in range(30))


async def test_runs_beyond_a_workers_capacity_wait_for_room_and_all_complete(
    tmp_path: Path,
) -> None:
    async with cluster_of(tmp_path, words=3, delay=0.1) as cluster:
        await cluster.start_server()
        await cluster.start_worker("--capacity", "2")
        async with cluster.client() as c:
            sessions = await asyncio.gather(*(new_session(c) for _ in range(8)))
            followed = [Events(c, s) for s in sessions]
            # Two runs fill the worker; the six sent while they run wait for room.
            runs = [await send(c, s) for s in sessions[:2]]
            for e in followed[:2]:
                await e.until(lambda e: e["type"] == "run-start")
            runs += await asyncio.gather(*(send(c, s) for s in sessions[2:]))
            ends = await asyncio.gather(
                *(e.run_end(r) for e, r in zip(followed, runs, strict=True))
            )
            for e in followed:
                await e.aclose()
            assert [end["reason"] for end in ends] == ["complete"] * 8, cluster.logs()


async def test_two_workers_share_fifty_sessions_each_run_once(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with cluster_of(tmp_path, words=3, delay=0.05, redis=redis) as cluster:
        await cluster.start_server()
        workers = [await cluster.start_worker(), await cluster.start_worker()]
        async with cluster.client() as c:
            sessions = await asyncio.gather(*(new_session(c) for _ in range(50)))
            followed = [Events(c, s) for s in sessions]
            runs = await asyncio.gather(*(send(c, s) for s in sessions))
            await asyncio.gather(*(e.run_end(r) for e, r in zip(followed, runs, strict=True)))
            for e in followed:
                await e.aclose()
            logs = await asyncio.gather(*(stream_events(c, s) for s in sessions))
            served = set()
            for log, run_id in zip(logs, runs, strict=True):
                types = [e["type"] for e in log]
                assert types.count("run-start") == 1 and types.count("run-end") == 1
                assert next(e for e in log if e["type"] == "run-end")["reason"] == "complete"
                assert answer_text(log, run_id) == "w0 w1 w2 "
                worker = next(e for e in log if e["type"] == "run-start")["worker"]
                served |= {w.pid for w in workers if f":{w.pid}:" in worker}
            assert served == {w.pid for w in workers}, "both workers serve some sessions"
