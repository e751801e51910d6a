"""A newcomer's mistakes against a real server get an answer that says what to send.

Tether's own session routes refuse a field they do not know (a typo would
otherwise be dropped and the request done without it), naming it and the
fields they take; the fronts that speak other vendors' APIs keep accepting
what their clients add. The gateway suggests the full name of an unprefixed
or misspelt model, and an unreachable upstream's error names where it was
sent (never its key).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.sse import events
from helpers.server import ServerFactory, TetherServer, find_free_port

KEY = "sk-test-newcomer-0123456789"


@pytest.fixture
def client(tether_server: ServerFactory) -> Iterator[httpx.Client]:
    server = tether_server(store="memory")
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def refused(r: httpx.Response, *says: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    for words in says:
        assert words in error["message"], error["message"]


def test_a_session_is_created_without_a_body(client: httpx.Client) -> None:
    r = client.post("/v1/sessions")
    assert r.status_code == 201, r.text
    assert r.json()["model"] is None  # as with {}: the demo model answers


def test_a_typo_in_a_body_is_refused_by_name_and_changes_nothing(client: httpx.Client) -> None:
    refused(
        client.post("/v1/sessions", json={"modle": "demo"}),
        "unknown field 'modle'",
        "did you mean 'model'?",
        "the fields are: model, agent, system, title, tools",
    )
    assert client.get("/v1/sessions").json()["sessions"] == []

    sid = client.post("/v1/sessions", json={}).json()["id"]
    before = client.get(f"/v1/sessions/{sid}").json()
    base = f"/v1/sessions/{sid}"
    typos = [
        ("PATCH", base, {"titel": "x"}, "unknown field 'titel' (did you mean 'title'?"),
        ("POST", f"{base}/messages", {"content": "x", "tool": []}, "did you mean 'tools'?"),
        (
            "POST",
            f"{base}/messages",
            {"content": [{"type": "text", "text": "x", "bold": True}]},
            "content[0]: unknown field 'bold' (the fields are: type, text)",
        ),
        (
            "POST",
            f"{base}/messages",
            {"content": [{"type": "image", "data": "aGk=", "mime": "image/png"}]},
            "content[0]: unknown field 'mime'",
        ),
        ("PATCH", f"{base}/messages/msg_x", {"content": "x", "id": 1}, "unknown field 'id'"),
        ("POST", f"{base}/regenerate", {"message": "msg_x"}, "unknown field 'message'"),
        ("POST", f"{base}/cancel", {"run": "run_x"}, "did you mean 'run_id'?"),
        ("POST", f"{base}/tool-results", {"call_id": "c", "output": 1}, "unknown field 'call_id'"),
        (
            "POST",
            f"{base}/tool-approvals",
            {"tool_call_id": "c", "approve": True},
            "did you mean 'approved'?",
        ),
        ("POST", f"{base}/read-token", {"ttl": 60, "scope": "x"}, "unknown field 'scope'"),
        ("POST", "/v1/read-tokens", {"streams": "x"}, "did you mean 'stream'?"),
    ]
    for method, url, body, says in typos:
        refused(client.request(method, url, json=body), says)
    assert client.get(f"/v1/sessions/{sid}").json() == before

    # The fronts of other vendors' APIs still take what their clients add on purpose.
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "demo",
            "messages": [{"role": "user", "content": "hi", "name": "me"}],
            "user": "someone",
            "some_vendor_option": {"x": 1},
        },
    )
    assert chat.status_code == 200, chat.text
    messages = client.post(
        "/v1/messages",
        json={
            "model": "demo",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"user_id": "u"},
            "some_vendor_option": True,
        },
    )
    assert messages.status_code == 200, messages.text


def test_a_missing_body_says_which_fields_to_send(client: httpx.Client) -> None:
    sid = client.post("/v1/sessions").json()["id"]
    refused(
        client.post(f"/v1/sessions/{sid}/messages"),
        "this request needs a JSON body: {content, parent_id?, interrupt?, tools?}",
    )


@pytest.fixture
def unreachable_upstream(tmp_path: Path) -> Iterator[tuple[TetherServer, int]]:
    """A server whose OpenAI-compatible upstream is configured where nothing listens."""
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {
        "TETHER_OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "TETHER_OPENAI_API_KEY": KEY,
        "TETHER_OPENAI_MODELS": "gpt-4o-mini",
    }
    server = TetherServer(tmp_path / "data", store="memory", log_path=tmp_path / "log", env=env)
    with server:
        yield server, port


def test_the_gateway_suggests_the_full_name_of_a_model(
    unreachable_upstream: tuple[TetherServer, int],
) -> None:
    server, _ = unreachable_upstream
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        for model in ("openrouter/gpt-4o-mini", "gpt-4o-mni"):
            r = c.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 404, r.text
            assert "Did you mean `openai/gpt-4o-mini`?" in r.json()["error"]["message"]


def test_an_unreachable_upstream_is_named_by_its_url_never_its_key(
    unreachable_upstream: tuple[TetherServer, int],
) -> None:
    server, port = unreachable_upstream
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "openai/gpt-4o-mini"}).json()["id"]
        run = c.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}).json()
        retry = next(e for _, e in events(c, f"/v1/sessions/{sid}/events") if e["type"] == "retry")
        c.post(f"/v1/sessions/{sid}/cancel", json={"run_id": run["run_id"]})
    error = str(retry["error"])
    assert f"could not connect (http://127.0.0.1:{port}/v1/chat/completions)" in error
    assert KEY not in error and KEY not in server.output()
