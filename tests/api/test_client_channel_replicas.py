"""The client channel on two real ``tether serve`` replicas over one Redis.

A run on replica A asks its clients (``web.agents``' ``asker``); the answer is
posted to replica B. A run that waits live gets it through the session's
stream (A's driver follows it); a run suspended meanwhile is continued by the
answer, from its journal, without asking again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from redis_server import RedisServer, running_redis
from web.support import agents_env

Snapshot = dict[str, Any]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def replicas(tmp_path: Path, redis: RedisServer, *args: str) -> list[TetherServer]:
    url = f"{redis.url()}?prefix=channel-{uuid.uuid4().hex[:8]}:"
    return [
        TetherServer(
            tmp_path / f"replica-{i}", store=url, log_path=tmp_path / f"replica-{i}.log",
            extra_args=["web.agents:app", *args], env=agents_env(),
        )
        for i in range(2)
    ]  # fmt: skip


def wait_for(c: httpx.Client, sid: str, done: Callable[[Snapshot], bool]) -> Snapshot:
    deadline = time.monotonic() + 20
    while True:
        snap: Snapshot = c.get(f"/v1/sessions/{sid}").json()
        if done(snap):
            return snap
        assert time.monotonic() < deadline, snap
        time.sleep(0.02)


def pending(snap: Snapshot) -> list[Snapshot]:
    return [r for r in snap.get("client_requests", []) if not r["answered"]]


def ask_on_a_answer_on_b(servers: list[TetherServer], suspended: bool) -> list[Snapshot]:
    """The whole log of a session whose run on A waited for an answer posted to B."""
    a, b = servers
    with (
        httpx.Client(base_url=a.base_url, timeout=30) as ca,
        httpx.Client(base_url=b.base_url, timeout=30) as cb,
    ):
        sid = ca.post("/v1/sessions", json={"agent": "asker"}).json()["id"]
        ca.post(f"/v1/sessions/{sid}/messages", json={"content": "Tidy up."}).raise_for_status()

        def waiting(s: Snapshot) -> bool:
            """Asked, and waiting: a live wait says ``paused`` (an event of its own, appended
            just after the request, so a read between the two still says ``running``)."""
            run = s["active_run"] or {}
            live = s["status"] == "paused" or suspended
            return bool(pending(s)) and ("suspended" in run) == suspended and live

        snap = wait_for(cb, sid, waiting)
        assert snap["active_run"] is not None
        rid = pending(snap)[0]["request_id"]
        r = cb.post(
            f"/v1/sessions/{sid}/client-responses",
            json={"request_id": rid, "result": {"confirmed": True}},
        )
        assert r.status_code == 202, r.text
        again = ca.post(
            f"/v1/sessions/{sid}/client-responses",
            json={"request_id": rid, "result": {"confirmed": False}},
        )
        assert again.status_code == 409  # once, whichever replica is asked
        done = wait_for(ca, sid, lambda s: s["status"] == "idle")
        assert done["messages"][-1]["parts"][-1]["text"] == "Deleted."
        return list(ca.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"}).json())


def test_a_request_of_a_run_on_replica_a_is_answered_through_replica_b(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    servers = replicas(tmp_path, redis_server)
    with servers[0], servers[1]:
        events = ask_on_a_answer_on_b(servers, suspended=False)
        a_pid = servers[0].pid
    [start] = [e for e in events if e["type"] == "run-start"]
    assert start["worker"].split(":")[1] == str(a_pid)  # the run ran on A
    assert not [e for e in events if e["type"] == "run-resume"]  # A's run got it live


def test_a_suspended_runs_request_answered_through_replica_b_continues_it_without_asking_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    servers = replicas(tmp_path, redis_server, "--suspend-after", "0.1")
    with servers[0], servers[1]:
        events = ask_on_a_answer_on_b(servers, suspended=True)
    kinds = [e["type"] for e in events]
    assert "run-suspend" in kinds and "run-resume" in kinds
    assert kinds.count("client-request") == 1  # the journal says it was asked
    [suspend] = [e for e in events if e["type"] == "run-suspend"]
    assert suspend["waiting"][0]["for"] == "request"
