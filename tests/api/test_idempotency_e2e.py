"""Idempotency-Key on every mutating route, against a real ``tether serve`` on SQLite.

A retry with the same key gets the first answer (same status and body, marked
``Idempotent-Replayed: true``) and changes nothing in the session's log; the
same key with another body is a 409; keys are the caller's own; a key whose
answer has expired may be used again. The cross-replica case is in
test_idempotency_replicas.py, the SDK's own retries in
tests/client/test_idempotent_retry.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.sse import events
from helpers.server import TetherServer

KEY_A = "tk-idem-a-5d1c0e9b7a"
KEY_B = "tk-idem-b-3f8e2a6c4d"
HERE = Path(__file__).parent


def server_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "TETHER_API_KEYS": f"{KEY_A},{KEY_B}", "PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("idempotency")
    with TetherServer(
        base / "data",
        log_path=base / "server.log",
        env=server_env(),
        extra_args=["idempotency_app:app"],
    ) as srv:
        yield srv


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, timeout=30, headers={"authorization": f"Bearer {KEY_A}"}
    ) as c:
        yield c


def keyed(key: str | None = None) -> dict[str, str]:
    return {"idempotency-key": key or str(uuid.uuid4())}


def new_session(client: httpx.Client, **body: Any) -> str:
    r = client.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def log_of(client: httpx.Client, sid: str) -> list[dict[str, Any]]:
    """Every event of the session's stream so far."""
    out: list[dict[str, Any]] = []
    offset = "-1"
    while True:
        r = client.get(f"/v1/stream/sessions/{sid}", params={"offset": offset})
        assert r.status_code == 200, r.text
        out += r.json()
        offset = r.headers["stream-next-offset"]
        if r.headers.get("stream-up-to-date") == "true":
            return out


def of_type(client: httpx.Client, sid: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in log_of(client, sid) if e["type"] == kind]


def run_end(client: httpx.Client, sid: str, run_id: str) -> dict[str, Any]:
    evs = [e for _, e in events(client, f"/v1/sessions/{sid}/events", until_run_end=run_id)]
    return evs[-1]


def wait_for(pred: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def replayed(first: httpx.Response, again: httpx.Response) -> None:
    """``again`` is ``first``'s answer, replayed."""
    assert again.status_code == first.status_code, again.text
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers


# -- send -------------------------------------------------------------------------------


def test_a_send_retried_with_its_key_makes_one_turn_and_gets_the_first_answer(
    client: httpx.Client,
) -> None:
    sid = new_session(client)
    headers = keyed()
    first = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}, headers=headers)
    assert first.status_code == 202, first.text
    run_end(client, sid, first.json()["run_id"])
    again = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}, headers=headers)
    replayed(first, again)
    assert len(of_type(client, sid, "user-message")) == 1
    assert len(of_type(client, sid, "run-start")) == 1


def test_the_same_key_with_another_body_is_refused_and_changes_nothing(
    client: httpx.Client,
) -> None:
    sid = new_session(client)
    headers = keyed()
    first = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}, headers=headers)
    assert first.status_code == 202, first.text
    other = client.post(f"/v1/sessions/{sid}/messages", json={"content": "ho"}, headers=headers)
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "different request" in error["message"]
    # The same key on another route is another request too.
    elsewhere = client.post(f"/v1/sessions/{sid}/cancel", json={}, headers=headers)
    assert elsewhere.status_code == 409, elsewhere.text
    assert [e["parts"][0]["text"] for e in of_type(client, sid, "user-message")] == ["hi"]


def test_concurrent_duplicates_make_one_turn(client: httpx.Client, server: TetherServer) -> None:
    sid = new_session(client)
    headers = {**keyed(), "authorization": f"Bearer {KEY_A}"}
    n = 16
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            barrier.wait()
            r = c.post(f"/v1/sessions/{sid}/messages", json={"content": "once"}, headers=headers)
            answers.append(r)

    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == n
    accepted = [r for r in answers if r.status_code == 202]
    busy = [r for r in answers if r.status_code == 409]
    assert len(accepted) + len(busy) == n, [r.text for r in answers]
    assert accepted and len({r.text for r in accepted}) == 1
    for r in busy:
        assert r.json()["error"]["code"] == "idempotency_in_progress"
        assert "still being processed" in r.json()["error"]["message"]
    assert len(of_type(client, sid, "user-message")) == 1


def test_a_bad_key_is_refused_with_400_and_changes_nothing(client: httpx.Client) -> None:
    sid = new_session(client)
    for bad in (b"k" * 256, "caf\u00e9".encode(), b"tab\there"):
        r = client.post(
            f"/v1/sessions/{sid}/messages", json={"content": "hi"}, headers={"idempotency-key": bad}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_idempotency_key"
    assert of_type(client, sid, "user-message") == []


def test_a_failed_request_does_not_use_its_key_up(client: httpx.Client) -> None:
    sid = new_session(client)
    headers = keyed()
    body = {"content": "hi", "parent_id": "msg_nowhere"}
    refused = client.post(f"/v1/sessions/{sid}/messages", json=body, headers=headers)
    assert refused.status_code == 400, refused.text
    # Nothing was kept: the key may now be used for the corrected request.
    ok = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}, headers=headers)
    assert ok.status_code == 202, ok.text
    replayed(ok, client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"},
                             headers=headers))  # fmt: skip


# -- every other mutating route ---------------------------------------------------------


def test_create_session_retried_makes_one_session(client: httpx.Client) -> None:
    headers = keyed()
    body = {"title": f"once {uuid.uuid4()}"}
    first = client.post("/v1/sessions", json=body, headers=headers)
    assert first.status_code == 201, first.text
    replayed(first, client.post("/v1/sessions", json=body, headers=headers))
    titles = [s["title"] for s in client.get("/v1/sessions").json()["sessions"]]
    assert titles.count(body["title"]) == 1


def test_edit_retried_makes_one_branch(client: httpx.Client) -> None:
    sid = new_session(client)
    sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": "one"}).json()
    run_end(client, sid, sent["run_id"])
    headers = keyed()
    url = f"/v1/sessions/{sid}/messages/{sent['message_id']}"
    first = client.patch(url, json={"content": "two"}, headers=headers)
    assert first.status_code == 202, first.text
    replayed(first, client.patch(url, json={"content": "two"}, headers=headers))
    assert len(of_type(client, sid, "user-message")) == 2  # the original and one edit
    assert len(of_type(client, sid, "run-start")) == 2


def test_regenerate_retried_makes_one_run(client: httpx.Client) -> None:
    sid = new_session(client)
    sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": "one"}).json()
    run_end(client, sid, sent["run_id"])
    headers = keyed()
    body = {"message_id": sent["message_id"]}
    first = client.post(f"/v1/sessions/{sid}/regenerate", json=body, headers=headers)
    assert first.status_code == 202, first.text
    replayed(first, client.post(f"/v1/sessions/{sid}/regenerate", json=body, headers=headers))
    assert len(of_type(client, sid, "run-start")) == 2


def test_cancel_retried_gets_the_first_answer(client: httpx.Client) -> None:
    sid = new_session(client)
    sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 2000 10"}).json()
    wait_for(lambda: of_type(client, sid, "run-start"))
    headers = keyed()
    first = client.post(f"/v1/sessions/{sid}/cancel", json={}, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["cancelled"] == [sent["run_id"]]
    assert run_end(client, sid, sent["run_id"])["reason"] == "cancelled"
    # Without the key this would answer that nothing was cancelled.
    replayed(first, client.post(f"/v1/sessions/{sid}/cancel", json={}, headers=headers))
    assert len(of_type(client, sid, "cancel")) == 1


def test_a_tool_result_retried_is_answered_once(client: httpx.Client) -> None:
    sid = new_session(client)
    sent = client.post(
        f"/v1/sessions/{sid}/messages", json={"content": '/tool lookup {"q": "x"}'}
    ).json()
    wait_for(lambda: [e for e in log_of(client, sid) if e.get("kind") == "tool-call"])
    call = next(e for e in log_of(client, sid) if e.get("kind") == "tool-call")
    headers = keyed()
    body = {"tool_call_id": call["tool_call_id"], "output": {"answer": 42}}
    first = client.post(f"/v1/sessions/{sid}/tool-results", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert run_end(client, sid, sent["run_id"])["reason"] == "complete"
    replayed(first, client.post(f"/v1/sessions/{sid}/tool-results", json=body, headers=headers))
    assert len(of_type(client, sid, "tool-result")) == 1


def test_a_tool_approval_retried_is_answered_once(client: httpx.Client) -> None:
    sid = new_session(client, agent="approve")
    sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": "go"}).json()
    wait_for(lambda: [e for e in log_of(client, sid) if e.get("kind") == "tool-call"])
    call = next(e for e in log_of(client, sid) if e.get("kind") == "tool-call")
    headers = keyed()
    body = {"tool_call_id": call["tool_call_id"], "approved": False, "reason": "no"}
    first = client.post(f"/v1/sessions/{sid}/tool-approvals", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert run_end(client, sid, sent["run_id"])["reason"] == "complete"
    replayed(first, client.post(f"/v1/sessions/{sid}/tool-approvals", json=body, headers=headers))
    assert len(of_type(client, sid, "tool-approval")) == 1


# -- the fronts that start runs ---------------------------------------------------------


def gateway_sessions(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/v1/sessions", params={"gateway": "true"}).json()["sessions"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_gateway_completion_retried_starts_one_run(client: httpx.Client, stream: bool) -> None:
    before = len(gateway_sessions(client))
    headers = keyed()
    body = {
        "model": "demo",
        "stream": stream,
        "messages": [{"role": "user", "content": f"/count 30 {stream:d}"}],
    }
    first = client.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post("/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.headers["x-tether-run-id"] == first.headers["x-tether-run-id"]
    assert again.text == first.text  # the same completion, or the same chunks from the start
    assert len(gateway_sessions(client)) == before + 1
    changed = client.post(
        "/v1/chat/completions", json={**body, "temperature": 0.5}, headers=headers
    )
    assert changed.status_code == 409, changed.text
    assert changed.json()["error"]["code"] == "idempotency_key_reused"


def test_a_gateway_retry_during_the_stream_reads_the_same_run(client: httpx.Client) -> None:
    headers = keyed()
    body = {
        "model": "demo",
        "stream": True,
        "messages": [{"role": "user", "content": "/count 200 5"}],
    }
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as first:
        assert first.status_code == 200
        run_id = first.headers["x-tether-run-id"]
        next(first.iter_lines())  # the stream has started; the run goes on
        again = client.post("/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers["x-tether-run-id"] == run_id
    chunks = [
        json.loads(line[6:]) for line in again.text.splitlines() if line.startswith("data: {")
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == " ".join(str(i) for i in range(1, 201))


def test_an_ai_sdk_chat_retried_starts_one_run(client: httpx.Client) -> None:
    chat = f"chat-{uuid.uuid4()}"
    body = {
        "id": chat,
        "trigger": "submit-message",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hey"}]}],
    }
    headers = keyed()
    first = client.post("/v1/aisdk/chat", json=body, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post("/v1/aisdk/chat", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.headers["x-tether-run-id"] == first.headers["x-tether-run-id"]
    assert again.text == first.text
    sid = first.headers["x-tether-session-id"]
    assert len(of_type(client, sid, "user-message")) == 1
    assert len(of_type(client, sid, "run-start")) == 1


# -- whose keys -------------------------------------------------------------------------


def test_one_api_keys_idempotency_keys_are_not_anothers(
    client: httpx.Client, server: TetherServer
) -> None:
    headers = keyed()
    body = {"title": f"mine {uuid.uuid4()}"}
    mine = client.post("/v1/sessions", json=body, headers=headers)
    assert mine.status_code == 201, mine.text
    replayed(mine, client.post("/v1/sessions", json=body, headers=headers))
    with httpx.Client(
        base_url=server.base_url, timeout=30, headers={"authorization": f"Bearer {KEY_B}"}
    ) as other:
        theirs = other.post("/v1/sessions", json=body, headers=headers)
        assert theirs.status_code == 201, theirs.text
        assert "idempotent-replayed" not in theirs.headers
        assert theirs.json()["id"] != mine.json()["id"]
        # The key is now theirs too, for their own request.
        sid = theirs.json()["id"]
        sent = other.post(f"/v1/sessions/{sid}/messages", json={"content": "x"}, headers=headers)
        assert sent.status_code == 409, sent.text
        assert sent.json()["error"]["code"] == "idempotency_key_reused"


# -- retention --------------------------------------------------------------------------

RETENTION = 1.0


def test_an_expired_key_may_be_used_again(tmp_path: Path) -> None:
    with (
        TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=server_env(),
            extra_args=["--idempotency-retention", str(RETENTION)],
        ) as srv,
        httpx.Client(
            base_url=srv.base_url, timeout=30, headers={"authorization": f"Bearer {KEY_A}"}
        ) as client,
    ):
        sid = new_session(client)
        headers = keyed()
        url = f"/v1/sessions/{sid}/messages"
        first = client.post(url, json={"content": "one"}, headers=headers)
        assert first.status_code == 202, first.text
        sent_at = time.monotonic()
        replayed(first, client.post(url, json={"content": "one"}, headers=headers))
        time.sleep(max(0.0, sent_at + RETENTION + 0.1 - time.monotonic()))  # the window passes
        later = client.post(url, json={"content": "two"}, headers=headers)
        assert later.status_code == 202, later.text
        assert "idempotent-replayed" not in later.headers
        assert later.json()["message_id"] != first.json()["message_id"]
        assert len(of_type(client, sid, "user-message")) == 2
