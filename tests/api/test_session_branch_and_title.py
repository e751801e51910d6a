"""A session's chosen branch and its title, kept by the server for every client.

Over real HTTP against a real ``tether serve`` on SQLite: ``PATCH
/v1/sessions/{id}`` with ``active_branch`` records the choice in the log (an
``active-branch`` event), so that a snapshot read by anyone shows it and a
message sent without a parent continues it; a session created without a title
is named after its first text message, whoever sends it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.server import ServerFactory, TetherServer
from sessions.scenarios import read_log


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("branch"))
    try:
        yield factory()
    finally:
        factory.stop_all()


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def settle(client: httpx.Client, sid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        snap = dict(client.get(f"/v1/sessions/{sid}").json())
        if snap["active_run"] is None and not snap["queue"]:
            return snap
        assert time.monotonic() < deadline, snap
        time.sleep(0.02)


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_the_chosen_branch_is_in_every_snapshot_and_a_send_continues_it(
    client: httpx.Client,
) -> None:
    sid = client.post("/v1/sessions", json={}).json()["id"]
    first = post(client, f"/v1/sessions/{sid}/messages", {"content": "first version"})
    first_answer = settle(client, sid)["messages"][-1]["id"]
    r = client.patch(f"/v1/sessions/{sid}/messages/{first['message_id']}",
                     json={"content": "second version"})  # fmt: skip
    assert r.status_code == 202, r.text
    assert settle(client, sid)["messages"][0]["parts"][0]["text"] == "second version"

    r = client.patch(f"/v1/sessions/{sid}", json={"active_branch": first_answer})
    assert r.status_code == 200, r.text
    snap = client.get(f"/v1/sessions/{sid}").json()
    assert [m["id"] for m in snap["messages"]] == [first["message_id"], first_answer]
    log = read_log(client, sid)
    assert log[-1]["type"] == "active-branch" and log[-1]["message_id"] == first_answer

    post(client, f"/v1/sessions/{sid}/messages", {"content": "and then"})
    snap = settle(client, sid)
    assert [m["parts"][0]["text"] for m in snap["messages"] if m["role"] == "user"] == [
        "first version",
        "and then",
    ]


def test_an_unknown_message_is_refused_and_changes_nothing(client: httpx.Client) -> None:
    sid = client.post("/v1/sessions", json={"title": "kept"}).json()["id"]
    post(client, f"/v1/sessions/{sid}/messages", {"content": "hello"})
    settle(client, sid)
    before = read_log(client, sid)
    r = client.patch(f"/v1/sessions/{sid}", json={"active_branch": "msg_nope", "title": "changed"})
    assert r.status_code == 400
    assert "msg_nope" in r.json()["error"]["message"]
    assert read_log(client, sid) == before
    assert client.get(f"/v1/sessions/{sid}").json()["title"] == "kept"


def test_a_session_created_without_a_title_is_named_after_its_first_message(
    client: httpx.Client,
) -> None:
    untitled = client.post("/v1/sessions", json={}).json()
    assert untitled["title"] == "New session"
    sid = untitled["id"]
    post(client, f"/v1/sessions/{sid}/messages", {"content": "\n  Plan the   trip\nto Lyon"})
    settle(client, sid)
    assert client.get(f"/v1/sessions/{sid}").json()["title"] == "Plan the trip"
    listed = client.get("/v1/sessions").json()["sessions"]
    assert next(s for s in listed if s["id"] == sid)["title"] == "Plan the trip"
    # Only the first: later messages, and a title given at creation, stay as they are.
    post(client, f"/v1/sessions/{sid}/messages", {"content": "another thing"})
    settle(client, sid)
    assert client.get(f"/v1/sessions/{sid}").json()["title"] == "Plan the trip"
    titled = client.post("/v1/sessions", json={"title": "Mine"}).json()["id"]
    post(client, f"/v1/sessions/{titled}/messages", {"content": "something else"})
    settle(client, titled)
    assert client.get(f"/v1/sessions/{titled}").json()["title"] == "Mine"
