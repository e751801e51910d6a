"""A full disk: writes are refused cleanly, reads go on, and service resumes by itself.

A real ``tether serve`` runs on a tmpfs of its own (see ``helpers.small_disk``)
that the test fills with a file and frees again while the server runs.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.test_sessions_e2e import wait_for
from helpers.small_disk import SmallDiskServer, require_small_disks

JSON = {"Content-Type": "application/json"}
BYTES = {"Content-Type": "application/octet-stream"}
WRITERS = 6


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SmallDiskServer]:
    require_small_disks()
    mount = tmp_path / "disk"
    mount.mkdir()
    server = SmallDiskServer(mount, "8m", log_path=tmp_path / "tether.log")
    with server:
        yield server


@pytest.fixture
def client(server: SmallDiskServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def fill(server: SmallDiskServer, client: httpx.Client) -> None:
    """Fill the disk, then the room left in SQLite's files, until the smallest append fails."""
    assert client.put("/v1/stream/ballast", headers=BYTES).status_code == 201
    server.fill()
    for body in (b"x" * 65536, b"x"):
        for _ in range(1000):
            r = client.post("/v1/stream/ballast", content=body, headers=BYTES)
            if r.status_code == 507:
                break
            assert r.status_code == 204, r.text
        else:
            raise AssertionError("appends never failed on a full disk")


def assert_insufficient_storage(r: httpx.Response) -> dict[str, Any]:
    """507 with a JSON error body and a Retry-After; returns the error object."""
    assert r.status_code == 507, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["retry-after"].isdigit()
    error: dict[str, Any] = r.json()["error"]
    return error


def read_json(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/stream/{path}", params={"offset": "-1"})
    assert r.status_code == 200, r.text
    assert r.headers["stream-up-to-date"] == "true"
    return list(r.json())


class Writer(threading.Thread):
    """Appends numbered messages; notes which were answered and which refused."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.name = name
        self.acked: list[int] = []
        self.refused: list[int] = []
        self.other: list[str] = []

    def run(self) -> None:
        pad = "x" * 2000
        with httpx.Client(timeout=30) as client:
            for i in range(400):
                body = {"w": self.name, "i": i, "pad": pad}
                r = client.post(self.url, json=body)
                if r.status_code in (200, 204):
                    self.acked.append(i)
                elif r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage":
                    self.refused.append(i)
                    if len(self.refused) >= 5:
                        return
                else:
                    self.other.append(f"{r.status_code} {r.text}")
                    return


def test_appends_that_race_into_a_full_disk_are_each_kept_or_refused_with_507(
    server: SmallDiskServer, client: httpx.Client
) -> None:
    """Concurrent appends share commits; when one fails, its whole group is refused.

    Each append is either answered and then read back, in order, or refused
    with 507 (a JSON error, Retry-After) and never seen, even after space is
    freed; reads go on while the disk is full.
    """
    assert client.put("/v1/stream/log", headers=JSON).status_code == 201
    server.fill()
    writers = [Writer(f"{server.base_url}/v1/stream/log", f"w{n}") for n in range(WRITERS)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert all(not w.other for w in writers), [w.other for w in writers]
    assert all(w.refused for w in writers), "the disk never filled up"

    def seen() -> dict[str, list[int]]:
        got: dict[str, list[int]] = {}
        for m in read_json(client, "log"):
            got.setdefault(m["w"], []).append(m["i"])
        return got

    acked = {w.name: w.acked for w in writers if w.acked}
    assert seen() == acked  # reads work while the disk is full
    refused = client.post("/v1/stream/log", json={"w": "late", "i": 0})
    error = assert_insufficient_storage(refused)
    assert error["code"] == "insufficient_storage"
    assert "disk" in error["message"]

    server.free()
    assert client.post("/v1/stream/log", json={"w": "after", "i": 0}).status_code == 204
    assert seen() == {**acked, "after": [0]}
    log = server.output()
    assert "cannot rollback" not in log
    assert "Traceback" not in log
    assert "database or disk is full" in log


def test_the_session_api_and_the_gateway_answer_507_and_keep_reading_while_the_disk_is_full(
    server: SmallDiskServer, client: httpx.Client
) -> None:
    r = client.post("/v1/sessions", json={})
    sid = r.json()["id"]
    run = client.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 3 0"}).json()
    wait_for(lambda: client.get(f"/v1/sessions/{sid}").json()["active_run"] is None)
    fill(server, client)

    error = assert_insufficient_storage(client.post("/v1/sessions", json={}))
    assert error["code"] == "insufficient_storage"
    sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hello"})
    assert assert_insufficient_storage(sent)["code"] == "insufficient_storage"
    completion = client.post(
        "/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
    )
    error = assert_insufficient_storage(completion)
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape
    assert error["code"] == "insufficient_storage"

    snapshot = client.get(f"/v1/sessions/{sid}").json()
    assert [m["role"] for m in snapshot["messages"]] == ["user", "assistant"]
    assert snapshot["messages"][1]["parts"][0]["text"] == "1 2 3"
    assert [s["id"] for s in client.get("/v1/sessions").json()["sessions"]] == [sid]

    server.free()
    again = client.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 2 0"})
    assert again.status_code == 202, again.text
    assert run["run_id"] != again.json()["run_id"]
    wait_for(lambda: client.get(f"/v1/sessions/{sid}").json()["active_run"] is None)
    assert client.get(f"/v1/sessions/{sid}").json()["messages"][-1]["parts"][0]["text"] == "1 2"


class GatewayReader(threading.Thread):
    """Streams one completion of the demo model through the gateway, chunk by chunk."""

    def __init__(self, base_url: str, content: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/v1/chat/completions"
        self.body = {
            "model": "demo",
            "stream": True,
            "messages": [{"role": "user", "content": content}],
        }
        self.chunks: list[dict[str, Any]] = []
        self.session_id = ""
        self.run_id = ""
        self.ended = threading.Event()

    def run(self) -> None:
        with httpx.stream("POST", self.url, json=self.body, timeout=30) as r:
            self.session_id = r.headers["x-tether-session-id"]
            self.run_id = r.headers["x-tether-run-id"]
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    self.chunks.append(json.loads(line[6:]))
        self.ended.set()


def cut_off_run(server: SmallDiskServer, client: httpx.Client) -> GatewayReader:
    """A streamed completion whose run failed on the full disk and could not end."""
    reader = GatewayReader(server.base_url, "/count 9000 2")
    reader.start()
    wait_for(lambda: len(reader.chunks) > 20)
    fill(server, client)
    wait_for(lambda: f"run {reader.run_id} failed" in server.output(), timeout=30)
    assert client.get(f"/v1/sessions/{reader.session_id}").json()["status"] == "running"
    assert not reader.ended.is_set()
    return reader


def test_a_run_cut_off_by_a_full_disk_ends_once_space_is_freed_and_its_stream_ends(
    server: SmallDiskServer, client: httpx.Client
) -> None:
    """The run's end is retried until it is written.

    So once space is freed the session leaves ``running``, and a client
    streaming the run through the gateway gets its end instead of hanging.
    """
    reader = cut_off_run(server, client)
    server.free()
    assert reader.ended.wait(30), "the gateway stream never ended"
    assert reader.chunks[-1]["error"]["code"] == "InsufficientStorage"
    sid = reader.session_id
    wait_for(lambda: client.get(f"/v1/sessions/{sid}").json()["status"] == "error")
    events = read_json(client, f"sessions/{sid}")
    ends = [e for e in events if e["type"] == "run-end"]
    assert [(e["run_id"], e["reason"]) for e in ends] == [(reader.run_id, "error")]
    assert [e["status"] for e in events if e["type"] == "status"] == ["running", "error"]


def test_a_server_still_shuts_down_promptly_while_a_run_end_waits_for_space(
    server: SmallDiskServer, client: httpx.Client
) -> None:
    """Retrying a run's end stops at shutdown; the run's record stays for the next start."""
    cut_off_run(server, client)
    # None if it still ran after STOP_TIMEOUT; uvicorn re-raises the signal once it is done.
    assert server.terminate() in (0, -signal.SIGTERM), server.output()
    assert "Application shutdown complete" in server.output()
    assert "is left open at shutdown; the next start ends it" in server.output()
