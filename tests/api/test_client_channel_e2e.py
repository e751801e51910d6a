"""The client channel over a real ``tether serve``: a session asks its clients to act.

An agent's ``ctx.request_client`` (``web.agents``: ``asker``, ``hasty``) and a
backend's ``POST /interact`` are answered by ``POST /client-responses``, by the
SDK's ``respond`` and ``serve_requests``, once; the answers come back as the
agent's result or as JSON-RPC responses streamed in the order they are given.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from tether.client import (
    AsyncTether,
    BadRequest,
    Conflict,
    NotFound,
    RpcError,
    RpcRequestInvalid,
    RpcServerError,
    SigninResult,
    Tether,
    Toolset,
)
from web.support import agents_env

Snapshot = dict[str, Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base: Path = tmp_path_factory.mktemp("channel")
    with TetherServer(
        base / "data", log_path=base / "server.log", extra_args=["web.agents:app"],
        env=agents_env(),
    ) as s:  # fmt: skip
        yield s


@pytest.fixture()
def http(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def new_session(http: httpx.Client, agent: str = "asker") -> str:
    r = http.post("/v1/sessions", json={"agent": agent})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_for(http: httpx.Client, sid: str, done: Callable[[Snapshot], bool]) -> Snapshot:
    deadline = time.monotonic() + 20
    while True:
        snap: Snapshot = http.get(f"/v1/sessions/{sid}").json()
        if done(snap):
            return snap
        assert time.monotonic() < deadline, snap
        time.sleep(0.02)


def pending(snap: Snapshot) -> list[Snapshot]:
    return [r for r in snap.get("client_requests", []) if not r["answered"]]


def ask(http: httpx.Client, agent: str = "asker") -> tuple[str, str]:
    """A session whose run waits for a client's answer: (session id, request id)."""
    sid = new_session(http, agent)
    http.post(f"/v1/sessions/{sid}/messages", json={"content": "Tidy up."}).raise_for_status()
    snap = wait_for(http, sid, lambda s: s["status"] == "paused" and bool(pending(s)))
    return sid, pending(snap)[0]["request_id"]


def answer_text(http: httpx.Client, sid: str) -> str:
    snap = wait_for(http, sid, lambda s: s["status"] == "idle")
    return "".join(p.get("text", "") for p in snap["messages"][-1]["parts"])


def log(http: httpx.Client, sid: str) -> list[Snapshot]:
    r = http.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"})
    return list(r.json())


# -- a run's request -------------------------------------------------------------------


def test_a_runs_request_waits_paused_and_is_answered_by_post_client_responses(
    http: httpx.Client,
) -> None:
    sid, rid = ask(http)
    snap = http.get(f"/v1/sessions/{sid}").json()
    [req] = snap["client_requests"]
    assert req["method"] == "confirm" and req["params"] == {"message": "Delete the report?"}
    assert req["message_id"] == snap["messages"][-1]["id"]  # shown under the run's answer
    r = http.post(
        f"/v1/sessions/{sid}/client-responses",
        json={"request_id": rid, "result": {"confirmed": True}},
    )
    assert r.status_code == 202, r.text
    assert answer_text(http, sid) == "Deleted."
    [req] = http.get(f"/v1/sessions/{sid}").json()["client_requests"]
    assert req["answered"] and req["result"] == {"confirmed": True}


def test_a_second_answer_gets_409_and_changes_nothing(http: httpx.Client) -> None:
    sid, rid = ask(http)
    path = f"/v1/sessions/{sid}/client-responses"
    assert (
        http.post(path, json={"request_id": rid, "result": {"confirmed": False}}).status_code == 202
    )
    before = log(http, sid)
    again = http.post(path, json={"request_id": rid, "result": {"confirmed": True}})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert answer_text(http, sid) == "Kept."
    responses = [e for e in log(http, sid) if e["type"] == "client-response"]
    assert len(responses) == 1 and [e for e in before if e["type"] == "client-response"]


def test_unknown_requests_bad_bodies_and_answers_the_method_refuses_change_nothing(
    http: httpx.Client,
) -> None:
    sid, rid = ask(http)
    path = f"/v1/sessions/{sid}/client-responses"
    before = log(http, sid)
    unknown = http.post(path, json={"request_id": "req_nope", "result": {"confirmed": True}})
    assert unknown.status_code == 404
    for body in (
        {"request_id": rid},  # neither result nor error
        {"request_id": rid, "result": {"confirmed": True}, "error": {"code": 1, "message": "x"}},
        {"result": {"confirmed": True}},
        {"request_id": rid, "result": {"confirmed": "yes"}},  # not what confirm answers
        {"request_id": rid, "error": {"code": "x", "message": "m"}},
        {"request_id": rid, "result": {"confirmed": True}, "extra": 1},
    ):
        r = http.post(path, json=body)
        assert r.status_code == 400, (body, r.text)
    assert log(http, sid) == before
    http.post(path, json={"request_id": rid, "result": {"confirmed": True}}).raise_for_status()
    assert answer_text(http, sid) == "Deleted."


def test_an_error_answer_reaches_the_agent_as_a_typed_error(http: httpx.Client) -> None:
    sid, rid = ask(http)
    error = {"code": -32000, "message": "the user closed the dialog", "data": {"why": "closed"}}
    r = http.post(f"/v1/sessions/{sid}/client-responses", json={"request_id": rid, "error": error})
    assert r.status_code == 202
    assert answer_text(http, sid) == "No answer: the user closed the dialog (-32000)"


def test_an_answer_with_an_idempotency_key_sent_twice_is_written_once(http: httpx.Client) -> None:
    sid, rid = ask(http)
    path = f"/v1/sessions/{sid}/client-responses"
    body = {"request_id": rid, "result": {"confirmed": True}}
    headers = {"Idempotency-Key": "answer-1"}
    first = http.post(path, json=body, headers=headers)
    second = http.post(path, json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.headers.get("idempotent-replayed") == "true"
    assert len([e for e in log(http, sid) if e["type"] == "client-response"]) == 1


def test_a_timeout_ends_the_wait_with_an_error_the_agent_sees(http: httpx.Client) -> None:
    sid = new_session(http, "hasty")
    http.post(f"/v1/sessions/{sid}/messages", json={"content": "Go."}).raise_for_status()
    text = answer_text(http, sid)
    assert text == "No answer: no client answered the request after 0.5 s (-32001)"
    [req] = http.get(f"/v1/sessions/{sid}").json()["client_requests"]
    assert req["answered"] and req["error"]["code"] == -32001
    late = http.post(
        f"/v1/sessions/{sid}/client-responses",
        json={"request_id": req["request_id"], "result": {"confirmed": True}},
    )
    assert late.status_code == 409


def test_the_sdk_handler_answers_a_runs_request(server: TetherServer, http: httpx.Client) -> None:
    sid, _ = ask(http)  # pending before the handler starts: it is answered first
    seen: list[Any] = []

    def confirm(params: Any) -> dict[str, Any]:
        seen.append(params)
        return {"confirmed": True}

    with Tether(server.base_url) as client:
        assert client.serve_requests(sid, {"confirm": confirm}, limit=1) == 1
    assert seen == [{"message": "Delete the report?"}]
    assert answer_text(http, sid) == "Deleted."


async def test_the_async_sdk_handler_answers_requests_as_they_come(
    server: TetherServer, http: httpx.Client
) -> None:
    sid = new_session(http)

    async def confirm(params: Any) -> dict[str, Any]:
        return {"confirmed": False}

    async with AsyncTether(server.base_url) as client:
        serving = asyncio.create_task(client.serve_requests(sid, {"confirm": confirm}, limit=1))
        await asyncio.sleep(0)  # the handler follows the session before the run asks
        await client.send(sid, "Tidy up.")
        assert await asyncio.wait_for(serving, 20) == 1
    assert answer_text(http, sid) == "Kept."


async def test_a_handler_that_raises_answers_with_its_error(
    server: TetherServer, http: httpx.Client
) -> None:
    sid, _ = ask(http)

    def refuse(params: Any) -> Any:
        raise RpcError(-32000, "the user closed the dialog")

    async with AsyncTether(server.base_url) as client:
        assert await client.serve_requests(sid, {"confirm": refuse}, limit=1) == 1
    assert answer_text(http, sid) == "No answer: the user closed the dialog (-32000)"


# -- a backend's requests: /interact ---------------------------------------------------------


def stream_interact(
    server: TetherServer, sid: str, body: Any, out: list[dict[str, Any]], started: threading.Event
) -> None:
    url = f"{server.base_url}/v1/sessions/{sid}/interact"
    with httpx.stream("POST", url, json=body, timeout=30) as r:
        assert r.status_code == 200
        started.set()
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))


def test_interact_streams_one_response_per_request_in_the_order_they_are_answered(
    server: TetherServer, http: httpx.Client
) -> None:
    sid = new_session(http)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"message": "First?"}},
        {"jsonrpc": "2.0", "id": "b", "method": "confirm", "params": {"message": "Second?"}},
    ]
    out: list[dict[str, Any]] = []
    started = threading.Event()
    reader = threading.Thread(target=stream_interact, args=(server, sid, batch, out, started))
    reader.start()
    assert started.wait(20)
    snap = wait_for(http, sid, lambda s: len(pending(s)) == 2)
    first, second = snap["client_requests"]
    assert (first["params"]["message"], second["params"]["message"]) == ("First?", "Second?")
    assert snap["status"] == "idle"  # no run waits: the session's status is its own
    path = f"/v1/sessions/{sid}/client-responses"
    answer = {"request_id": second["request_id"], "result": {"confirmed": False}}
    assert http.post(path, json=answer).status_code == 202
    answer = {"request_id": first["request_id"], "result": None}  # an untyped method's null
    assert http.post(path, json=answer).status_code == 202
    reader.join(20)
    assert not reader.is_alive()  # the stream ended when both were answered
    assert out == [
        {"jsonrpc": "2.0", "id": "b", "result": {"confirmed": False}},
        {"jsonrpc": "2.0", "id": 1, "result": None},
    ]


def test_a_request_without_an_id_is_refused_whole_and_nothing_is_recorded(
    http: httpx.Client,
) -> None:
    sid = new_session(http)
    before = log(http, sid)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "confirm", "params": {"message": "A?"}},
        {"jsonrpc": "2.0", "method": "confirm", "params": {"message": "B?"}},
    ]
    r = http.post(f"/v1/sessions/{sid}/interact", json=batch)
    assert r.status_code == 400
    body = r.json()
    assert body["id"] is None and body["error"]["code"] == -32600
    assert "notification" in body["error"]["message"]
    for bad in (b"{not json", b"[]", b'{"jsonrpc": "2.0", "id": 1}', b"[1, 2]"):
        r = http.post(
            f"/v1/sessions/{sid}/interact", content=bad,
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert r.status_code == 400 and r.json()["id"] is None, bad
    assert log(http, sid) == before


def test_the_sdk_refuses_a_notification_before_sending_and_raises_a_server_level_error(
    server: TetherServer, http: httpx.Client
) -> None:
    sid = new_session(http)
    with Tether(server.base_url) as client:
        with pytest.raises(RpcRequestInvalid):
            list(client.interact(sid, [{"method": "confirm", "params": {"message": "?"}}]))
        with pytest.raises(RpcServerError) as refused:  # params signin does not take
            list(client.interact(sid, {"id": 1, "method": "signin", "params": {"toolsets": []}}))
        assert refused.value.code == -32602
    assert log(http, sid) == []


def test_the_typed_sdk_methods_ask_and_parse_the_answers(
    server: TetherServer, http: httpx.Client
) -> None:
    sid = new_session(http)
    handlers = {
        "signin": lambda p: {
            t["id"]: {"status": "signed_in"} if t["id"] == "gh" else {"status": "declined"}
            for t in p["toolsets"]
        },
        "confirm": lambda p: {"confirmed": p["message"] == "Go?"},
        "input": lambda p: {"action": "accept", "content": {"name": "Ada", "age": 36}},
    }
    with Tether(server.base_url) as asker, Tether(server.base_url) as user:
        serving = threading.Thread(
            target=user.serve_requests, args=(sid, handlers), kwargs={"limit": 3}
        )
        serving.start()
        toolsets = [
            Toolset("gh", "https://github.example/oauth", name="GitHub"),
            Toolset("cal", "https://calendar.example/oauth"),
        ]
        assert asker.signin_toolsets(sid, toolsets) == {
            "gh": SigninResult("signed_in"), "cal": SigninResult("declined"),
        }  # fmt: skip
        assert asker.confirm(sid, "Go?") is True
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name"],
        }
        got = asker.request_input(sid, "Who are you?", schema)
        assert (got.action, got.content) == ("accept", {"name": "Ada", "age": 36})
        serving.join(20)
        assert not serving.is_alive()


def test_an_input_answer_that_does_not_match_the_schema_gets_400(
    server: TetherServer, http: httpx.Client
) -> None:
    sid = new_session(http)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    body = {"jsonrpc": "2.0", "id": 7, "method": "input",
            "params": {"message": "Age?", "schema": schema}}  # fmt: skip
    out: list[dict[str, Any]] = []
    started = threading.Event()
    reader = threading.Thread(target=stream_interact, args=(server, sid, body, out, started))
    reader.start()
    assert started.wait(20)
    [req] = pending(wait_for(http, sid, lambda s: len(pending(s)) == 1))
    with Tether(server.base_url) as client:
        with pytest.raises(BadRequest, match="schema"):
            client.respond(sid, req["request_id"], {"action": "accept", "content": {"age": "old"}})
        client.respond(sid, req["request_id"], {"action": "accept", "content": {"age": 36}})
        with pytest.raises(Conflict):
            client.respond(sid, req["request_id"], {"action": "decline"})
        with pytest.raises(NotFound):
            client.respond(sid, "req_nope", {"action": "decline"})
    reader.join(20)
    assert out == [
        {"jsonrpc": "2.0", "id": 7, "result": {"action": "accept", "content": {"age": 36}}}
    ]


def test_a_null_result_parses_as_a_result_of_none(server: TetherServer, http: httpx.Client) -> None:
    sid = new_session(http)
    with Tether(server.base_url) as asker, Tether(server.base_url) as user:
        serving = threading.Thread(
            target=user.serve_requests, args=(sid, {"ping": lambda p: None}), kwargs={"limit": 1}
        )
        serving.start()
        [response] = list(asker.interact(sid, {"id": "p", "method": "ping"}))
        serving.join(20)
    assert response.id == "p" and response.error is None and response.value() is None


def test_requests_of_an_interact_caller_that_left_stay_answerable(
    server: TetherServer, http: httpx.Client
) -> None:
    sid = new_session(http)
    body = {"jsonrpc": "2.0", "id": 1, "method": "confirm", "params": {"message": "Still?"}}
    url = f"{server.base_url}/v1/sessions/{sid}/interact"
    with httpx.stream("POST", url, json=body, timeout=30) as r:
        assert r.status_code == 200  # and the caller leaves, unanswered
    [req] = pending(wait_for(http, sid, lambda s: len(pending(s)) == 1))
    r = http.post(
        f"/v1/sessions/{sid}/client-responses",
        json={"request_id": req["request_id"], "result": {"confirmed": True}},
    )
    assert r.status_code == 202
    [req] = http.get(f"/v1/sessions/{sid}").json()["client_requests"]
    assert req["answered"] and req["result"] == {"confirmed": True}


def test_the_request_of_a_run_that_ended_is_not_answerable(
    server: TetherServer, http: httpx.Client
) -> None:
    sid, rid = ask(http)
    http.post(f"/v1/sessions/{sid}/cancel", json={}).raise_for_status()
    wait_for(http, sid, lambda s: s["status"] == "idle")
    r = http.post(
        f"/v1/sessions/{sid}/client-responses",
        json={"request_id": rid, "result": {"confirmed": True}},
    )
    assert r.status_code == 409 and "has ended" in r.json()["error"]["message"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "confirm", "params": {"message": "Backend?"}}
    backend = threading.Thread(
        target=stream_interact, args=(server, sid, body, [], threading.Event())
    )
    backend.start()
    wait_for(http, sid, lambda s: len(s["client_requests"]) == 2)
    seen: list[Any] = []

    def confirm(params: Any) -> dict[str, Any]:
        seen.append(params)
        return {"confirmed": True}

    with Tether(server.base_url) as client:  # a handler serves the backend's only
        assert client.serve_requests(sid, {"confirm": confirm}, limit=1) == 1
    backend.join(20)
    assert seen == [{"message": "Backend?"}]
