"""kill -9 mid-stream: every answered append survives, in order, and nothing half-written.

Several writers append concurrently through idempotent producers while the
server is killed with SIGKILL. After a restart on the same data dir, each
writer retries its one unanswered request with the same producer sequence:
the producer state was committed with the data, so the retry is recognised
if the append had landed, and nothing is duplicated either way. The same with
64 producers on streams of their own, on both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers.catch_up import read_to_tail
from helpers.server import ServerFactory
from redis_server import running_redis

JSON = {"Content-Type": "application/json"}
WRITERS = 4
PAD = "x" * 3000  # several SQLite pages per append, so a torn write would show


class Writer(threading.Thread):
    def __init__(self, url: str, name: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.producer = name
        self.acked: list[int] = []
        self.in_flight: int | None = None
        self.stop = threading.Event()

    def body(self, seq: int) -> bytes:
        return httpx.Request("POST", "/", json={"p": self.producer, "i": seq, "pad": PAD}).content

    def headers(self, seq: int) -> dict[str, str]:
        return {
            **JSON,
            "Producer-Id": self.producer,
            "Producer-Epoch": "0",
            "Producer-Seq": str(seq),
        }

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            seq = 0
            while not self.stop.is_set():
                self.in_flight = seq
                try:
                    r = client.post(self.url, headers=self.headers(seq), content=self.body(seq))
                except httpx.HTTPError:
                    return  # the server died under us: seq stays in flight
                assert r.status_code == 200, r.text
                self.acked.append(seq)
                self.in_flight = None
                seq += 1


def test_answered_appends_survive_sigkill_in_order(tether_server: ServerFactory) -> None:
    server = tether_server()
    url = server.stream_url("crash-test")
    assert httpx.put(url, headers=JSON).status_code == 201
    writers = [Writer(url, f"writer-{n}") for n in range(WRITERS)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 10
    while sum(len(w.acked) for w in writers) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)

    server.kill()
    for w in writers:
        w.stop.set()
        w.join(10)
    assert sum(len(w.acked) for w in writers) >= 200, "writers made too little progress"

    restarted = tether_server(server.data_dir)
    url = restarted.stream_url("crash-test")
    with httpx.Client(timeout=10) as client:
        for w in writers:
            if w.in_flight is not None:
                r = client.post(url, headers=w.headers(w.in_flight), content=w.body(w.in_flight))
                # 204: it had landed before the kill; 200: it had not, and lands now.
                assert r.status_code in (200, 204), r.text
                w.acked.append(w.in_flight)
        events = read_to_tail(url, "-1", client)

    for event in events:
        assert event["pad"] == PAD, "a message was stored half-written"
    for w in writers:
        mine = [e["i"] for e in events if e["p"] == w.producer]
        assert mine == w.acked, f"{w.producer}: stored {mine[-5:]}, answered {w.acked[-5:]}"


PRODUCERS = 64


def read_stream(url: str) -> list[dict[str, object]]:
    with httpx.Client(timeout=10) as client:
        return read_to_tail(url, "-1", client)


class Producer:
    """One of many producers: a stream and a connection of its own, idempotent appends."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.acked: list[int] = []
        self.in_flight: int | None = None
        #: Set once a few appends were answered: the producer is up to speed.
        self.going = asyncio.Event()

    def headers(self, seq: int) -> dict[str, str]:
        return {**JSON, "Producer-Id": self.name, "Producer-Epoch": "0", "Producer-Seq": str(seq)}

    def body(self, seq: int) -> bytes:
        return httpx.Request("POST", "/", json={"i": seq, "pad": PAD}).content

    async def run(self) -> None:
        """Append until the server dies under us (the last seq stays in flight)."""
        async with httpx.AsyncClient(timeout=5) as client:
            seq = 0
            while True:
                self.in_flight = seq
                try:
                    r = await client.post(
                        self.url, headers=self.headers(seq), content=self.body(seq)
                    )
                except httpx.HTTPError:
                    return
                assert r.status_code == 200, r.text
                self.acked.append(seq)
                self.in_flight = None
                seq += 1
                if seq == 3:
                    self.going.set()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_answered_appends_of_64_concurrent_producers_survive_sigkill(
    tether_server: ServerFactory, tmp_path: Path, store: str
) -> None:
    """Many producers at once, as many concurrent runs are: their appends share group
    commits (SQLite) or pipelined round trips (Redis); none answered may be lost."""
    with contextlib.ExitStack() as stack:
        spec = "sqlite"
        if store == "redis":
            spec = stack.enter_context(running_redis(tmp_path / "redis")).url()
        server = tether_server(store=spec)
        producers = [
            Producer(server.stream_url(f"producer-{n}"), f"p{n}") for n in range(PRODUCERS)
        ]
        async with httpx.AsyncClient(timeout=10) as client:
            for p in producers:
                assert (await client.put(p.url, headers=JSON)).status_code == 201
        tasks = [asyncio.create_task(p.run()) for p in producers]
        await asyncio.wait_for(asyncio.gather(*(p.going.wait() for p in producers)), 30)
        await asyncio.to_thread(server.kill)
        await asyncio.wait_for(asyncio.gather(*tasks), 20)

        restarted = tether_server(server.data_dir, store=spec)
        async with httpx.AsyncClient(timeout=10) as client:
            for p in producers:
                url = restarted.stream_url(f"producer-{p.name.removeprefix('p')}")
                if p.in_flight is not None:
                    r = await client.post(
                        url, headers=p.headers(p.in_flight), content=p.body(p.in_flight)
                    )
                    # 204: it had landed before the kill; 200: it had not, and lands now.
                    assert r.status_code in (200, 204), r.text
                    p.acked.append(p.in_flight)
                events = await asyncio.to_thread(read_stream, url)
                assert [e["i"] for e in events] == p.acked, p.name
                assert all(e["pad"] == PAD for e in events), "a message was stored half-written"
