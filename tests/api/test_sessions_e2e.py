"""End to end over real HTTP against a real `tether serve` on SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.sse import events, run_text
from helpers.server import ServerFactory, TetherServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("sessions"))
    try:
        yield factory()
    finally:
        factory.stop_all()


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def new_session(client: httpx.Client, **body: Any) -> str:
    r = client.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def send(client: httpx.Client, sid: str, text: str, **extra: Any) -> dict[str, Any]:
    r = client.post(f"/v1/sessions/{sid}/messages", json={"content": text, **extra})
    assert r.status_code == 202, r.text
    return dict(r.json())


def wait_for(pred: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def streamed(client: httpx.Client, sid: str) -> str:
    """Text of the last message so far."""
    parts = client.get(f"/v1/sessions/{sid}").json()["messages"][-1]["parts"]
    return str(parts[0]["text"]) if parts else ""


def collect(client: httpx.Client, sid: str, run_id: str) -> list[dict[str, Any]]:
    return [e for _, e in events(client, f"/v1/sessions/{sid}/events", until_run_end=run_id)]


def test_a_reader_that_drops_and_resumes_gets_every_token_exactly_once(
    client: httpx.Client,
) -> None:
    sid = new_session(client)
    run = send(client, sid, "/count 300 5")
    got: list[dict[str, Any]] = []
    last: str | None = None
    drops = 0
    while not any(e["type"] == "run-end" for e in got):
        batch = list(
            events(client, f"/v1/sessions/{sid}/events", last_event_id=last, limit=97,
                   until_run_end=run["run_id"])
        )  # fmt: skip
        if batch:
            last = batch[-1][0]
            got += [e for _, e in batch]
        drops += 1
    assert drops >= 4
    assert run_text(got, run["run_id"]) == " ".join(str(i) for i in range(1, 301))
    ids = [e["id"] for e in got]
    assert len(ids) == len(set(ids)), "an event was delivered twice"


def test_three_readers_one_joining_from_the_snapshot_agree(client: httpx.Client) -> None:
    sid = new_session(client)
    run = send(client, sid, "/count 120 10")
    results: dict[str, Any] = {}

    def follow(name: str) -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as c:
            results[name] = collect(c, sid, run["run_id"])

    readers = [threading.Thread(target=follow, args=(n,)) for n in ("a", "b")]
    for t in readers:
        t.start()
    time.sleep(0.5)  # mid-run
    snap = client.get(f"/v1/sessions/{sid}").json()
    assert snap["status"] == "running"
    late = [
        e for _, e in events(
            client, f"/v1/sessions/{sid}/events", offset=snap["offset"], until_run_end=run["run_id"]
        )
    ]  # fmt: skip
    for t in readers:
        t.join(30)
    partial = next(m for m in snap["messages"] if m["role"] == "assistant")
    streamed_before = partial["parts"][0]["text"] if partial["parts"] else ""
    expected = " ".join(str(i) for i in range(1, 121))
    assert run_text(results["a"], run["run_id"]) == expected
    assert run_text(results["b"], run["run_id"]) == expected
    late_deltas = "".join(e["delta"] for e in late if e["type"] == "part-delta")
    assert streamed_before + late_deltas == expected
    final = client.get(f"/v1/sessions/{sid}").json()["messages"]
    assert final[-1]["parts"][0]["text"] == expected


def test_cancel_from_another_client_ends_the_run_as_cancelled(
    client: httpx.Client, server: TetherServer
) -> None:
    sid = new_session(client)
    run = send(client, sid, "/count 1000 10")
    time.sleep(0.3)
    with httpx.Client(base_url=server.base_url, timeout=10) as other:
        started = time.monotonic()
        r = other.post(f"/v1/sessions/{sid}/cancel", json={})
        assert r.status_code == 202 and r.json()["cancelled"] == [run["run_id"]]
        assert time.monotonic() - started < 0.5
    got = collect(client, sid, run["run_id"])
    ends = [e for e in got if e["type"] == "run-end"]
    assert [e["reason"] for e in ends] == ["cancelled"]
    text = run_text(got, run["run_id"])
    assert 0 < len(text.split()) < 1000
    time.sleep(0.2)  # the model stopped: nothing more arrives after the run-end
    after = client.get(f"/v1/sessions/{sid}").json()
    assert after["messages"][-1]["parts"][0]["text"] == text
    assert after["status"] == "idle"


def test_queue_edit_and_regenerate(client: httpx.Client) -> None:
    sid = new_session(client)
    first = send(client, sid, "/count 20 10")
    second = send(client, sid, "hello")
    assert not first["queued"] and second["queued"]
    snap = client.get(f"/v1/sessions/{sid}").json()
    assert [q["run_id"] for q in snap["queue"]] == [second["run_id"]]
    collect(client, sid, second["run_id"])
    snap = client.get(f"/v1/sessions/{sid}").json()
    assert [m["role"] for m in snap["messages"]] == ["user", "assistant", "user", "assistant"]
    assert snap["queue"] == []

    r = client.patch(
        f"/v1/sessions/{sid}/messages/{second['message_id']}", json={"content": "/count 3"}
    )
    assert r.status_code == 202, r.text
    edited = r.json()
    collect(client, sid, edited["run_id"])
    snap = client.get(f"/v1/sessions/{sid}").json()
    assert snap["messages"][2]["id"] == edited["message_id"]
    assert snap["messages"][2]["siblings"] == [second["message_id"], edited["message_id"]]
    assert snap["messages"][3]["parts"][0]["text"] == "1 2 3"

    answer_id = snap["messages"][3]["id"]
    r = client.post(f"/v1/sessions/{sid}/regenerate", json={"message_id": answer_id})
    assert r.status_code == 202, r.text
    collect(client, sid, r.json()["run_id"])
    snap = client.get(f"/v1/sessions/{sid}").json()
    assert snap["messages"][3]["id"] != answer_id
    assert answer_id in snap["messages"][3]["siblings"]


def test_transient_failures_are_retried_with_retry_events(client: httpx.Client) -> None:
    sid = new_session(client)
    run = send(client, sid, "/fail 2 /count 3")
    got = collect(client, sid, run["run_id"])
    retries = [e for e in got if e["type"] == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["delay_ms"] > 0 for r in retries)
    assert run_text(got, run["run_id"]) == "1 2 3"
    assert [e["reason"] for e in got if e["type"] == "run-end"] == ["complete"]


def test_tool_round_trip(client: httpx.Client) -> None:
    sid = new_session(client)
    run = send(client, sid, '/tool weather {"city": "Paris"}')
    seen: list[dict[str, Any]] = []
    for _, e in events(client, f"/v1/sessions/{sid}/events", until_run_end=run["run_id"]):
        seen.append(e)
        if e["type"] == "part-start" and e["kind"] == "tool-call":
            assert e["tool_name"] == "weather"
            r = client.post(
                f"/v1/sessions/{sid}/tool-results",
                json={"tool_call_id": e["tool_call_id"], "output": {"temp_c": 21}},
            )
            assert r.status_code == 202, r.text
    assert "21" in run_text(seen, run["run_id"])
    assert [e["reason"] for e in seen if e["type"] == "run-end"] == ["complete"]


def test_malformed_session_input_is_refused_and_changes_nothing(client: httpx.Client) -> None:
    sid = new_session(client)
    before = client.get(f"/v1/sessions/{sid}").json()
    bad = [
        ("POST", f"/v1/sessions/{sid}/messages", {"content": ""}, 400),
        ("POST", f"/v1/sessions/{sid}/messages", {"nope": 1}, 400),
        ("POST", f"/v1/sessions/{sid}/messages", {"content": "x", "parent_id": "msg_nope"}, 400),
        ("POST", f"/v1/sessions/{sid}/regenerate", {"message_id": "msg_nope"}, 400),
        ("PATCH", f"/v1/sessions/{sid}/messages/msg_nope", {"content": "x"}, 400),
        ("POST", f"/v1/sessions/{sid}/tool-results", {"tool_call_id": "c"}, 400),
        ("POST", "/v1/sessions/ses_nope/messages", {"content": "x"}, 404),
        ("POST", "/v1/sessions", {"model": "no-such-model"}, 400),
        ("GET", f"/v1/sessions/{sid}/events?offset=banana", None, 400),
    ]
    for method, url, body, status in bad:
        r = client.request(method, url, json=body)
        assert r.status_code == status, (url, r.text)
        assert r.json()["error"]["message"]
    after = client.get(f"/v1/sessions/{sid}").json()
    assert after == before


def test_kill_9_mid_run_then_restart_continues_the_same_run(
    tether_server: ServerFactory,
) -> None:
    """The cut answer goes on after the restart, under the same run id, whole and once."""
    server = tether_server()
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        sid = new_session(c)
        done = send(c, sid, "/count 5 1")
        collect(c, sid, done["run_id"])
        run = send(c, sid, "/count 300 10")
        wait_for(lambda: len(streamed(c, sid).split()) >= 30)
        before = c.get(f"/v1/sessions/{sid}").json()
    server.kill()

    restarted = tether_server(server.data_dir)
    with httpx.Client(base_url=restarted.base_url, timeout=10) as c:
        evs = [e for _, e in events(c, f"/v1/sessions/{sid}/events", until_run_end=run["run_id"])]
        assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete", "complete"]
        assert [e["run_id"] for e in evs if e["type"] == "run-resume"] == [run["run_id"]]
        after = c.get(f"/v1/sessions/{sid}").json()
        assert after["status"] == "idle" and after["active_run"] is None
        msgs = after["messages"]
        assert [m["id"] for m in msgs] == [m["id"] for m in before["messages"]]
        assert msgs[1]["parts"][0]["text"] == "1 2 3 4 5"
        assert msgs[-1]["status"] == "complete"
        assert "".join(p["text"] for p in msgs[-1]["parts"]) == " ".join(map(str, range(1, 301)))
