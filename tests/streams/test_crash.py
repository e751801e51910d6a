"""kill -9 mid-stream: every answered append survives, in order, and nothing half-written.

Several writers append concurrently through idempotent producers while the
server is killed with SIGKILL. After a restart on the same data dir, each
writer retries its one unanswered request with the same producer sequence:
the producer state was committed with the data, so the retry is recognised
if the append had landed, and nothing is duplicated either way.
"""

from __future__ import annotations

import threading
import time

import httpx

from helpers.server import ServerFactory

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


def read_all(client: httpx.Client, url: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    offset = "-1"
    while True:
        r = client.get(url, params={"offset": offset})
        assert r.status_code == 200, r.text
        out += r.json()
        offset = r.headers["stream-next-offset"]
        if r.headers.get("stream-up-to-date") == "true":
            return out


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
        events = read_all(client, url)

    for event in events:
        assert event["pad"] == PAD, "a message was stored half-written"
    for w in writers:
        mine = [e["i"] for e in events if e["p"] == w.producer]
        assert mine == w.acked, f"{w.producer}: stored {mine[-5:]}, answered {w.acked[-5:]}"
