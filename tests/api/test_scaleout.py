"""Three `tether serve` replicas on one Redis, behind no load balancer at all.

Each test starts a real redis-server and three real server processes sharing
it (`--store redis://...`), spreads clients over all three, and kills one with
SIGKILL mid-run. Readers resume on a surviving replica from the offset they
last saw, as a client behind a load balancer would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.sse import events, run_text
from helpers.server import ServerFactory, TetherServer
from redis_server import RedisServer, running_redis
from tether.client import RunStart, Tether

LEASE_TTL = 2.0
#: The reaper looks once a second; the rest is slack for a busy 2-core machine.
TAKEOVER_BOUND = LEASE_TTL + 1.0 + 1.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def replicas(
    tether_server: ServerFactory, tmp_path: Path, redis_server: RedisServer
) -> list[TetherServer]:
    url = f"{redis_server.url()}?prefix=chaos-{uuid.uuid4().hex[:8]}:"
    return [
        tether_server(tmp_path / f"replica-{i}", store=url,
                      extra_args=["--lease-ttl", str(LEASE_TTL)])
        for i in range(3)
    ]  # fmt: skip


def pid_of(worker: str) -> int:
    return int(worker.split(":")[-2])


class Reader(threading.Thread):
    """Follows a session's events over SSE, moving to the next replica when one dies."""

    def __init__(self, servers: list[TetherServer], sid: str, until_run_end: str) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.sid = sid
        self.until = until_run_end
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.reconnects = 0
        self.error: BaseException | None = None
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            self._follow()
        except BaseException as err:  # reported by the test
            self.error = err

    def _follow(self) -> None:
        deadline = time.monotonic() + 60
        turn = 0
        while time.monotonic() < deadline:
            server = self.servers[turn % len(self.servers)]
            last = self.got[-1][0] if self.got else None
            try:
                with httpx.Client(base_url=server.base_url, timeout=10) as c:
                    self.connected.set()
                    for item in events(c, f"/v1/sessions/{self.sid}/events", last_event_id=last,
                                       until_run_end=self.until):  # fmt: skip
                        self.got.append(item)
                    if self.got and self.got[-1][1].get("run_id") == self.until:
                        return
            except (httpx.HTTPError, AssertionError):
                pass
            self.reconnects += 1
            turn += 1
            time.sleep(0.05)
        raise AssertionError("reader gave up")


def post(server: TetherServer, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = httpx.post(server.base_url + path, json=body or {}, timeout=10)
    assert r.status_code in (200, 201, 202), r.text
    return dict(r.json()) if r.content else {}


def snapshot(server: TetherServer, sid: str) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/v1/sessions/{sid}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for(pred: Any, timeout: float) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_killed_replicas_run_continues_on_another_and_the_queue_goes_on(
    replicas: list[TetherServer],
) -> None:
    a, b, c = replicas
    sid = str(post(a, "/v1/sessions", {"model": "demo"})["id"])
    running = post(a, f"/v1/sessions/{sid}/messages", {"content": "/count 300 10"})
    queued = post(b, f"/v1/sessions/{sid}/messages", {"content": "/count 5 1"})
    assert not running["queued"] and queued["queued"]

    # Two readers on each replica.
    readers = [Reader([r, *[s for s in replicas if s is not r]], sid, queued["run_id"])
               for r in replicas for _ in range(2)]  # fmt: skip
    for reader in readers:
        reader.start()
        reader.connected.wait(5)

    def streamed() -> int:
        msg = snapshot(c, sid)["messages"][-1]
        return len(msg["parts"][0]["text"].split()) if msg["parts"] else 0

    wait_for(lambda: streamed() >= 40, timeout=15)
    a.kill()
    killed_at = time.time()

    for reader in readers:
        reader.join(40)
        assert not reader.is_alive() and reader.error is None, reader.error

    # Every reader saw the same events, in the same order, each once, with no gap.
    with httpx.Client(base_url=c.base_url, timeout=10) as http:
        full = list(events(http, f"/v1/sessions/{sid}/events", until_run_end=queued["run_id"]))
    assert len({e["id"] for _, e in full}) == len(full)
    for reader in readers:
        assert reader.got == full
    assert sum(r.reconnects for r in readers[:2]) >= 2  # A's readers moved on

    evs = [e for _, e in full]
    # The same run went on, on another replica, within the takeover bound.
    (resume,) = [e for e in evs if e["type"] == "run-resume"]
    assert resume["run_id"] == running["run_id"] and pid_of(resume["worker"]) in (b.pid, c.pid)
    took = resume["ts"] - killed_at
    assert took <= TAKEOVER_BOUND, f"the run went on {took:.2f}s after the kill"
    ends = [(e["run_id"], e["reason"]) for e in evs if e["type"] == "run-end"]
    assert ends == [(running["run_id"], "complete"), (queued["run_id"], "complete")]
    starts = {e["run_id"]: pid_of(e["worker"]) for e in evs if e["type"] == "run-start"}
    assert starts[running["run_id"]] == a.pid
    assert starts[queued["run_id"]] in (b.pid, c.pid)
    assert run_text(evs, queued["run_id"]) == "1 2 3 4 5"
    # The cut attempt was discarded: the answer is whole, nothing twice.
    answer = snapshot(b, sid)["messages"][1]
    assert answer["status"] == "complete"
    assert "".join(p["text"] for p in answer["parts"]) == " ".join(map(str, range(1, 301)))
    assert snapshot(b, sid)["status"] == "idle"


def test_a_cancel_posted_to_one_replica_stops_a_run_on_another(
    replicas: list[TetherServer],
) -> None:
    a, b, c = replicas
    sid = str(post(a, "/v1/sessions", {"model": "demo"})["id"])
    run = post(a, f"/v1/sessions/{sid}/messages", {"content": "/count 2000 10"})
    seen: list[tuple[float, dict[str, Any]]] = []

    def read() -> None:
        with httpx.Client(base_url=c.base_url, timeout=10) as http:
            for _, e in events(http, f"/v1/sessions/{sid}/events", until_run_end=run["run_id"]):
                seen.append((time.monotonic(), e))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: sum(e["type"] == "part-delta" for _, e in seen) >= 20, timeout=15)
    asked = time.monotonic()
    assert post(b, f"/v1/sessions/{sid}/cancel")["cancelled"] == [run["run_id"]]
    reader.join(10)
    assert not reader.is_alive()
    at, end = seen[-1]
    assert end["type"] == "run-end" and end["reason"] == "cancelled"
    assert at - asked < 0.3, f"the run ended {at - asked:.3f}s after the cancel was posted"
    starts = [e for _, e in seen if e["type"] == "run-start"]
    assert pid_of(starts[0]["worker"]) == a.pid
    # The run was stopped, not just marked: nothing more is streamed.
    time.sleep(0.3)
    with httpx.Client(base_url=b.base_url, timeout=10) as http:
        after = list(events(http, f"/v1/sessions/{sid}/events", until_run_end=run["run_id"]))
    assert [e for _, e in after] == [e for _, e in seen]
    assert snapshot(b, sid)["status"] == "idle"


def test_the_sdk_follows_a_run_handed_over_to_another_replica(
    replicas: list[TetherServer],
) -> None:
    a, b, _ = replicas
    with Tether(a.base_url) as on_a, Tether(b.base_url) as on_b:
        s = on_a.sessions.create(model="demo")
        first = on_a.send(s.id, "/count 30 10")
        handed = on_b.send(s.id, "/count 3 1")
        assert handed.queued
        assert handed.text() == "1 2 3"
        assert handed.result().reason == "complete"
        assert first.result().reason == "complete"
        starts: dict[str | None, RunStart] = {}
        for e in on_b.events(s.id):
            if isinstance(e, RunStart):
                starts[e.run_id] = e
                if len(starts) == 2:
                    break
    # A was driving the session, so the run handed over through the stream ran there.
    assert pid_of(str(starts[handed.run_id].worker)) == a.pid


def test_a_run_cut_by_a_redis_outage_continues_once_redis_is_back(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        a, b = (
            tether_server(tmp_path / f"replica-{i}", store=redis.url(),
                          extra_args=["--lease-ttl", str(LEASE_TTL)])
            for i in range(2)
        )  # fmt: skip
        sid = str(post(a, "/v1/sessions", {"model": "demo"})["id"])
        run = post(a, f"/v1/sessions/{sid}/messages", {"content": "/count 300 10"})
        wait_for(lambda: len(snapshot(b, sid)["messages"][-1]["parts"]) > 0, timeout=10)
        redis.kill()
        time.sleep(0.5)
        # Nothing is acknowledged while Redis is away.
        down = httpx.post(f"{b.base_url}/v1/sessions/{sid}/messages",
                          json={"content": "hello?"}, timeout=10)  # fmt: skip
        assert down.status_code == 503 and down.headers["retry-after"]
        time.sleep(LEASE_TTL)
        redis.start()

        def ended() -> bool:
            r = httpx.get(f"{b.base_url}/v1/sessions/{sid}", timeout=10)
            return r.status_code == 200 and r.json()["status"] == "idle"

        wait_for(ended, timeout=LEASE_TTL + 10)
        with httpx.Client(base_url=b.base_url, timeout=10) as http:
            evs = [e for _, e in events(http, f"/v1/sessions/{sid}/events",
                                        until_run_end=run["run_id"])]  # fmt: skip
        # The lease lapsed while Redis was away: a replica took the run over and
        # finished it from its journal (the cut attempt discarded).
        assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete"]
        assert [e["run_id"] for e in evs if e["type"] == "run-resume"] == [run["run_id"]]
        answer = snapshot(b, sid)["messages"][1]
        assert "".join(p["text"] for p in answer["parts"]) == " ".join(map(str, range(1, 301)))
        # Service goes on, on either replica, without a restart.
        again = post(b, f"/v1/sessions/{sid}/messages", {"content": "/count 3 1"})
        with httpx.Client(base_url=a.base_url, timeout=10) as http:
            evs = [e for _, e in events(http, f"/v1/sessions/{sid}/events",
                                        until_run_end=again["run_id"])]  # fmt: skip
        assert run_text(evs, again["run_id"]) == "1 2 3"
        assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete", "complete"]
    finally:
        redis.stop()
