"""Crafted input to the session API, the AI SDK front and the gateway: 4xx, and nothing changes.

Each case answered 500 on main, some after writing half of what the request
meant to write (a session with no chat, a chat whose history no request could
match again, a stream with no session record).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from helpers.server import TetherServer

DEEP = {"a": 1}
for _ in range(300):
    DEEP = {"a": DEEP}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("crafted")
    with TetherServer(base / "data", log_path=base / "server.log") as srv:
        yield srv


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def _post_raw(client: httpx.Client, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


def _session_ids(client: httpx.Client) -> set[str]:
    return {s["id"] for s in client.get("/v1/sessions").json()["sessions"]}


def _waiting_for_a_tool(client: httpx.Client) -> tuple[str, str]:
    sid = client.post("/v1/sessions", json={}).json()["id"]
    client.post(f"/v1/sessions/{sid}/messages", json={"content": '/tool lookup {"q": 1}'})
    for _ in range(200):
        snap = client.get(f"/v1/sessions/{sid}").json()
        calls = [p for m in snap["messages"] for p in m["parts"] if p.get("kind") == "tool-call"]
        if calls and snap["status"] == "paused":
            return sid, calls[0]["tool_call_id"]
        time.sleep(0.02)
    raise AssertionError("the demo model never asked for the tool")


@pytest.mark.parametrize(
    ("output", "what"),
    [
        ("123456789012345678901234567890", "an integer past 64 bits"),
        ('"\\udc00"', "a lone surrogate"),
        (json.dumps(DEEP), "nesting past the depth limit"),
    ],
)
def test_a_tool_result_tether_cannot_carry_is_refused(
    client: httpx.Client, output: str, what: str
) -> None:
    sid, call = _waiting_for_a_tool(client)
    before = client.get(f"/v1/sessions/{sid}").json()["offset"]
    r = _post_raw(
        client,
        f"/v1/sessions/{sid}/tool-results",
        f'{{"tool_call_id": "{call}", "output": {output}}}',
    )
    assert r.status_code == 400, (what, r.text)
    assert r.json()["error"]["code"] in ("bad_request", "json_too_deep")
    assert client.get(f"/v1/sessions/{sid}").json()["offset"] == before


def test_a_message_with_a_lone_surrogate_is_refused(client: httpx.Client) -> None:
    sid = client.post("/v1/sessions", json={}).json()["id"]
    r = _post_raw(client, f"/v1/sessions/{sid}/messages", '{"content": "hi \\ud800"}')
    assert r.status_code == 400
    assert client.get(f"/v1/sessions/{sid}").json()["messages"] == []


def test_an_aisdk_regenerate_with_nothing_to_regenerate_creates_nothing(
    client: httpx.Client,
) -> None:
    before = _session_ids(client)
    r = client.post(
        "/v1/aisdk/chat",
        json={
            "id": "regen-nothing",
            "messages": [],
            "trigger": "regenerate-message",
            "messageId": "",
        },
    )
    assert r.status_code == 400, r.text
    assert _session_ids(client) == before


def test_an_aisdk_chat_whose_first_request_fails_can_be_used_afterwards(
    client: httpx.Client,
) -> None:
    """A seed that fails half-way leaves neither session nor chat, so the id starts afresh."""
    history = [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]},
        {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "hi there"}]},
    ]
    before = _session_ids(client)
    failed = client.post(
        "/v1/aisdk/chat",
        json={
            "id": "half-seeded",
            "messages": history,
            "trigger": "regenerate-message",
            "messageId": "not-in-history",
        },
    )
    assert failed.status_code == 409, failed.text
    assert _session_ids(client) == before
    ok = client.post(
        "/v1/aisdk/chat",
        json={
            "id": "half-seeded",
            "messages": [
                *history,
                {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "/count 2"}]},
            ],
        },
    )
    assert ok.status_code == 200, ok.text
    assert "data: [DONE]" in ok.text


def test_a_gateway_request_whose_tools_cannot_be_stored_leaves_no_session(
    client: httpx.Client,
) -> None:
    before = _session_ids(client)
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "deep", "parameters": DEEP}}],
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    big = {**body, "tools": [{"type": "function", "function": {"name": "n", "parameters": {}}}]}
    big["seed"] = 2**70
    r = _post_raw(client, "/v1/chat/completions", json.dumps(big))
    assert r.status_code == 400, r.text
    assert _session_ids(client) == before
