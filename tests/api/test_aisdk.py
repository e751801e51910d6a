"""The Vercel AI SDK front, over real HTTP against a real `tether serve`.

The first tests read the UI message stream protocol with plain httpx and check
exact chunk sequences; the last one runs the real `ai` npm package under Node
(tests/aisdk/run.mjs: DefaultChatTransport, readUIMessageStream and
AbstractChat, the core of useChat) against the same server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import ServerFactory, TetherServer
from tether.providers.demo import REASONING, default_reply, words

REPO_ROOT = Path(__file__).resolve().parents[2]
AISDK_DIR = REPO_ROOT / "tests" / "aisdk"
CHAT = "/v1/aisdk/chat"
NODE_TIMEOUT = 120.0
#: The web app calling tether from its own dev server: an origin tether is told to allow.
APP_ORIGIN = "http://localhost:3000"

AGENTS = """
import tether

app = tether.App()


@app.agent("boom")
async def boom(ctx):
    await ctx.text("partial")
    raise RuntimeError("kaboom")


@app.agent("careful")
async def careful(ctx):
    outcome = await ctx.tool_call("delete", {"path": "/tmp/x"}, approval=True)
    await ctx.text("done" if outcome.ok else f"refused: {outcome.error}")
"""


# -- servers and clients ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("aisdk"))
    try:
        yield factory(extra_args=["--cors-origins", APP_ORIGIN])
    finally:
        factory.stop_all()


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30, headers={"origin": APP_ORIGIN}) as c:
        yield c


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    """Auth on (two keys) and two user agents: one that fails, one that needs approval."""
    base = tmp_path_factory.mktemp("aisdk-keyed")
    (base / "aisdk_test_agents.py").write_text(textwrap.dedent(AGENTS))
    path = os.pathsep.join(p for p in (str(base), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TETHER_API_KEYS": "key-a,key-b"}
    server = TetherServer(
        base / "data", log_path=base / "server.log", extra_args=["aisdk_test_agents:app"], env=env
    )
    with server:
        yield server


def keyed(server: TetherServer, key: str = "key-a") -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, timeout=30, headers={"authorization": f"Bearer {key}"}
    )


# -- the UI message stream, read raw --------------------------------------------------


@dataclass
class UIStream:
    status: int
    headers: httpx.Headers
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    body: str = ""

    @property
    def types(self) -> list[str]:
        return [c["type"] for c in self.chunks]


def read_ui(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    body: dict[str, Any] | None = None,
    on_chunk: Callable[[dict[str, Any], UIStream], None] | None = None,
) -> UIStream:
    """One request, its SSE read to the end: chunks, and whether [DONE] came last."""
    with client.stream(method, url, json=body, timeout=30) as r:
        out = UIStream(r.status_code, r.headers)
        if r.status_code != 200:
            out.body = r.read().decode()
            return out
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            assert not out.done, f"data after [DONE]: {line}"
            if line == "data: [DONE]":
                out.done = True
                continue
            chunk = json.loads(line[6:])
            out.chunks.append(chunk)
            if on_chunk is not None:
                on_chunk(chunk, out)
    return out


def user(text: str, mid: str | None = None) -> dict[str, Any]:
    return {
        "id": mid or f"u-{time.monotonic_ns()}",
        "role": "user",
        "parts": [{"type": "text", "text": text}],
    }


def assistant(mid: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": mid, "role": "assistant", "parts": [{"type": "step-start"}, *parts]}


def chat_body(chat_id: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message", **extra}


def new_chat_id() -> str:
    return f"chat-{time.monotonic_ns()}"


def opening(stream: UIStream) -> tuple[str, list[dict[str, Any]]]:
    """The message id, and the two chunks every run's stream starts with."""
    mid = stream.chunks[0]["messageId"]
    meta = {
        "tether": {
            "sessionId": stream.headers["x-tether-session-id"],
            "runId": stream.headers["x-tether-run-id"],
        }
    }
    return mid, [
        {"type": "start", "messageId": mid, "messageMetadata": meta},
        {"type": "start-step"},
    ]


def text_chunks(part_id: str, pieces: list[str], kind: str = "text") -> list[dict[str, Any]]:
    return [
        {"type": f"{kind}-start", "id": part_id},
        *({"type": f"{kind}-delta", "id": part_id, "delta": p} for p in pieces),
        {"type": f"{kind}-end", "id": part_id},
    ]


FINISH = [{"type": "finish-step"}, {"type": "finish", "finishReason": "stop"}]


def snapshot(client: httpx.Client, stream: UIStream) -> dict[str, Any]:
    r = client.get(f"/v1/sessions/{stream.headers['x-tether-session-id']}")
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- the protocol -------------------------------------------------------------------


def test_count_is_answered_as_a_ui_message_stream(client: httpx.Client) -> None:
    s = read_ui(client, "POST", CHAT, body=chat_body(new_chat_id(), user("/count 3")))
    assert s.status == 200, s.body
    assert s.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["access-control-allow-origin"] == APP_ORIGIN
    mid, start = opening(s)
    assert s.chunks == [*start, *text_chunks(f"{mid}:1", ["1", " 2", " 3"]), *FINISH]
    assert s.done
    # The message id is the session's assistant message: a client's ids are tether's.
    messages = snapshot(client, s)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["id"] == mid and messages[1]["parts"][0]["text"] == "1 2 3"


def test_reasoning_comes_before_the_text(client: httpx.Client) -> None:
    s = read_ui(client, "POST", CHAT, body=chat_body(new_chat_id(), user("/reason hi")))
    assert s.status == 200, s.body
    mid, start = opening(s)
    assert s.chunks == [
        *start,
        *text_chunks(f"{mid}:1", words(REASONING), "reasoning"),
        *text_chunks(f"{mid}:2", words(default_reply("hi"))),
        *FINISH,
    ]
    assert s.done


def test_a_tool_call_waits_for_its_result_from_the_native_api(
    client: httpx.Client, server: TetherServer
) -> None:
    posted: list[int] = []

    def answer(chunk: dict[str, Any], stream: UIStream) -> None:
        if chunk["type"] == "tool-input-available":
            sid = stream.headers["x-tether-session-id"]
            with httpx.Client(base_url=server.base_url, timeout=10) as other:
                r = other.post(
                    f"/v1/sessions/{sid}/tool-results",
                    json={"tool_call_id": chunk["toolCallId"], "output": {"temp_c": 21}},
                )
            posted.append(r.status_code)

    body = chat_body(new_chat_id(), user('/tool weather {"city": "Paris"}'))
    s = read_ui(client, "POST", CHAT, body=body, on_chunk=answer)
    assert s.status == 200, s.body
    assert posted == [202]
    mid, start = opening(s)
    call = s.chunks[2]["toolCallId"]
    assert s.chunks == [
        *start,
        {"type": "tool-input-start", "toolCallId": call, "toolName": "weather"},
        # The demo model streams the arguments word by word, as models do.
        {"type": "tool-input-delta", "toolCallId": call, "inputTextDelta": '{"city":'},
        {"type": "tool-input-delta", "toolCallId": call, "inputTextDelta": ' "Paris"}'},
        {
            "type": "tool-input-available",
            "toolCallId": call,
            "toolName": "weather",
            "input": {"city": "Paris"},
        },
        {"type": "tool-output-available", "toolCallId": call, "output": {"temp_c": 21}},
        # The model is called again with the result: a second step.
        {"type": "finish-step"},
        {"type": "start-step"},
        *text_chunks(f"{mid}:2", words('Tool weather returned: {"temp_c": 21}')),
        *FINISH,
    ]
    assert s.done


def test_resume_is_204_for_an_unknown_chat_and_after_the_run(client: httpx.Client) -> None:
    chat_id = new_chat_id()
    r = client.get(f"{CHAT}/{chat_id}/stream")
    assert r.status_code == 204 and r.content == b""
    s = read_ui(client, "POST", CHAT, body=chat_body(chat_id, user("/count 2")))
    assert s.done
    r = client.get(f"{CHAT}/{chat_id}/stream")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN


def test_resume_mid_run_replays_the_whole_run_from_its_start(
    client: httpx.Client, server: TetherServer
) -> None:
    chat_id = new_chat_id()
    result: dict[str, UIStream] = {}
    deltas = threading.Semaphore(0)

    def direct() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            result["post"] = read_ui(
                c,
                "POST",
                CHAT,
                body=chat_body(chat_id, user("/count 60 20")),
                on_chunk=lambda ch, _: ch["type"] == "text-delta" and deltas.release(),
            )

    thread = threading.Thread(target=direct)
    thread.start()
    for _ in range(5):  # a few numbers into the run
        assert deltas.acquire(timeout=15)
    resumed = read_ui(client, "GET", f"{CHAT}/{chat_id}/stream")
    thread.join(30)
    post = result["post"]
    assert resumed.status == 200, resumed.body
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert resumed.headers["x-tether-run-id"] == post.headers["x-tether-run-id"]
    mid, start = opening(post)
    numbers = ["1", *(f" {i}" for i in range(2, 61))]
    assert post.chunks == [*start, *text_chunks(f"{mid}:1", numbers), *FINISH]
    assert resumed.chunks == post.chunks  # from the run's start, not from where it was
    assert post.done and resumed.done
    assert client.get(f"{CHAT}/{chat_id}/stream").status_code == 204


# -- the chat and its session -----------------------------------------------------------


def test_a_second_turn_sends_only_the_new_message(client: httpx.Client) -> None:
    chat_id = new_chat_id()
    u1, u2 = user("/count 3", "u1"), user("/count 2", "u2")
    first = read_ui(client, "POST", CHAT, body=chat_body(chat_id, u1))
    a1 = assistant(first.chunks[0]["messageId"], {"type": "text", "text": "1 2 3"})
    second = read_ui(client, "POST", CHAT, body=chat_body(chat_id, u1, a1, u2))
    assert second.status == 200, second.body
    assert second.headers["x-tether-session-id"] == first.headers["x-tether-session-id"]
    messages = snapshot(client, second)["messages"]
    assert [(m["role"], m["parts"][0]["text"]) for m in messages] == [
        ("user", "/count 3"),
        ("assistant", "1 2 3"),
        ("user", "/count 2"),
        ("assistant", "1 2"),
    ]


def test_history_a_chat_session_does_not_have_is_refused(client: httpx.Client) -> None:
    chat_id = new_chat_id()
    u1 = user("/count 3", "u1")
    first = read_ui(client, "POST", CHAT, body=chat_body(chat_id, u1))
    stranger = assistant("not-from-tether", {"type": "text", "text": "made up"})
    r = client.post(CHAT, json=chat_body(chat_id, u1, stranger, user("/count 2")))
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict"
    assert "not-from-tether" in r.json()["error"]["message"]
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    assert len(snapshot(client, first)["messages"]) == 2  # nothing was written
    # The new message alone continues the session's history.
    alone = read_ui(client, "POST", CHAT, body=chat_body(chat_id, user("/count 1")))
    assert alone.status == 200, alone.body
    assert len(snapshot(client, alone)["messages"]) == 4


def test_a_new_chat_with_history_is_seeded_with_it(client: httpx.Client) -> None:
    history = [
        user("What is the weather?", "h1"),
        assistant(
            "h2",
            {"type": "reasoning", "text": "Ask the tool."},
            {
                "type": "tool-weather",
                "toolCallId": "call_h2",
                "state": "output-available",
                "input": {"city": "Paris"},
                "output": {"temp_c": 21},
            },
            {"type": "text", "text": "21 degrees."},
        ),
    ]
    s = read_ui(client, "POST", CHAT, body=chat_body(new_chat_id(), *history, user("/count 2")))
    assert s.status == 200, s.body
    mid, start = opening(s)
    assert s.chunks == [*start, *text_chunks(f"{mid}:1", ["1", " 2"]), *FINISH]
    messages = snapshot(client, s)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["parts"][0]["text"] == "What is the weather?"
    seeded = messages[1]["parts"]
    assert [p["kind"] for p in seeded] == ["reasoning", "tool-call", "text"]
    assert seeded[1]["tool_call_id"] == "call_h2" and seeded[1]["result"] == {"temp_c": 21}
    assert seeded[2]["text"] == "21 degrees."


def test_regenerate_and_edit(client: httpx.Client) -> None:
    chat_id = new_chat_id()
    u1 = user("/count 3", "u1")
    first = read_ui(client, "POST", CHAT, body=chat_body(chat_id, u1))
    answer = first.chunks[0]["messageId"]

    body = {"id": chat_id, "messages": [u1], "trigger": "regenerate-message", "messageId": answer}
    again = read_ui(client, "POST", CHAT, body=body)
    assert again.status == 200, again.body
    mid, start = opening(again)
    assert mid != answer
    assert again.chunks == [*start, *text_chunks(f"{mid}:1", ["1", " 2", " 3"]), *FINISH]
    messages = snapshot(client, again)["messages"]
    assert messages[1]["id"] == mid and messages[1]["siblings"] == [answer, mid]

    # useChat's sendMessage({text, messageId}) sends the same id with new text: an edit.
    edited = read_ui(client, "POST", CHAT, body=chat_body(chat_id, user("/count 1", "u1")))
    assert edited.status == 200, edited.body
    messages = snapshot(client, edited)["messages"]
    assert [(m["role"], m["parts"][0]["text"]) for m in messages] == [
        ("user", "/count 1"),
        ("assistant", "1"),
    ]
    assert len(messages[0]["siblings"]) == 2


def test_cancel_mid_run_ends_the_stream_with_abort(
    client: httpx.Client, server: TetherServer
) -> None:
    def cancel_after_three(chunk: dict[str, Any], stream: UIStream) -> None:
        if chunk["type"] == "text-delta" and chunk["delta"] == " 3":
            sid = stream.headers["x-tether-session-id"]
            with httpx.Client(base_url=server.base_url, timeout=10) as other:
                other.post(f"/v1/sessions/{sid}/cancel", json={})

    body = chat_body(new_chat_id(), user("/count 500 10"))
    s = read_ui(client, "POST", CHAT, body=body, on_chunk=cancel_after_three)
    mid, start = opening(s)
    assert s.chunks[:2] == start
    assert s.chunks[-3:] == [
        {"type": "text-end", "id": f"{mid}:1"},
        {"type": "finish-step"},
        {"type": "abort", "reason": "cancelled"},
    ]
    assert s.done


def test_a_queued_run_cancelled_before_it_starts_ends_its_stream(
    client: httpx.Client, server: TetherServer
) -> None:
    chat_id = new_chat_id()
    first = read_ui(client, "POST", CHAT, body=chat_body(chat_id, user("/count 1", "u1")))
    sid = first.headers["x-tether-session-id"]
    busy = client.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 300 10"})
    assert busy.status_code == 202
    a1 = assistant(first.chunks[0]["messageId"], {"type": "text", "text": "1"})
    body = chat_body(chat_id, user("/count 1", "u1"), a1, user("/count 2", "u2"))
    with client.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        with httpx.Client(base_url=server.base_url, timeout=10) as other:
            cancelled = other.post(
                f"/v1/sessions/{sid}/cancel", json={"run_id": r.headers["x-tether-run-id"]}
            )
            assert cancelled.json()["cancelled"] == [r.headers["x-tether-run-id"]]
            other.post(f"/v1/sessions/{sid}/cancel", json={})  # and the busy run
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines == [
        'data: {"type":"start"}',
        'data: {"type":"abort","reason":"cancelled"}',
        "data: [DONE]",
    ]
    # u2 never entered the session, but the client keeps it: the next turn still works.
    body["messages"].append(user("/count 3", "u3"))
    third = read_ui(client, "POST", CHAT, body=body)
    assert third.status == 200, third.body
    messages = snapshot(client, third)["messages"]
    assert [m["parts"][0]["text"] for m in messages if m["role"] == "user"] == [
        "/count 1",
        "/count 3",
    ]


def test_bad_requests_are_refused_before_anything_is_written(client: httpx.Client) -> None:
    before = len(client.get("/v1/sessions").json()["sessions"])
    file_part = {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,A!"}
    cases = [
        (chat_body(new_chat_id()), 400),  # no messages
        (chat_body(new_chat_id(), assistant("a", {"type": "text", "text": "x"})), 400),
        (chat_body(new_chat_id(), user("   ")), 400),
        (chat_body(new_chat_id(), {"id": "u", "role": "user", "parts": [file_part]}), 400),
        (chat_body(new_chat_id(), user("hi"), model="nope/nothing"), 400),
        (chat_body(new_chat_id(), user("hi"), trigger="resume-stream"), 422),
        ({"messages": []}, 422),
    ]
    for body, status in cases:
        r = client.post(CHAT, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    assert len(client.get("/v1/sessions").json()["sessions"]) == before


def test_cors_preflight(client: httpx.Client) -> None:
    for path in (CHAT, f"{CHAT}/some-chat/stream"):
        r = client.options(
            path,
            headers={
                "origin": APP_ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert r.headers["access-control-allow-headers"] == "content-type, authorization"


# -- auth, errors and approvals (user agents) ---------------------------------------


def test_chats_belong_to_the_caller(keyed_server: TetherServer) -> None:
    with keyed(keyed_server, "key-a") as a, keyed(keyed_server, "key-b") as b:
        r = httpx.post(
            keyed_server.base_url + CHAT,
            json=chat_body("shared", user("hi")),
            headers={"origin": APP_ORIGIN},
        )
        assert r.status_code == 401
        assert r.headers["access-control-allow-origin"] == "*"
        sa = read_ui(a, "POST", CHAT, body=chat_body("shared", user("/count 2"), model="demo"))
        sb = read_ui(b, "POST", CHAT, body=chat_body("shared", user("/count 3"), model="demo"))
        assert sa.done and sb.done
        sid_a, sid_b = sa.headers["x-tether-session-id"], sb.headers["x-tether-session-id"]
        assert sid_a != sid_b  # the same chat id, two callers: two sessions
        assert b.get(f"/v1/sessions/{sid_a}").status_code == 404
        token = a.post(f"/v1/sessions/{sid_a}/read-token").json()["token"]
        with httpx.Client(base_url=keyed_server.base_url, timeout=10) as anon:
            assert anon.get(f"{CHAT}/shared/stream", params={"token": token}).status_code == 204
            r = anon.post(CHAT, params={"token": token}, json=chat_body("shared", user("x")))
            assert r.status_code == 401  # a read token cannot send


def test_a_failing_run_reports_an_error(keyed_server: TetherServer) -> None:
    with keyed(keyed_server) as a:
        s = read_ui(a, "POST", CHAT, body=chat_body(new_chat_id(), user("go"), agent="boom"))
    assert s.status == 200, s.body
    mid, start = opening(s)
    assert s.chunks == [
        *start,
        *text_chunks(f"{mid}:1", ["partial"]),
        {"type": "error", "errorText": "kaboom"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "error"},
    ]
    assert s.done


def test_a_refused_approval_is_a_denied_tool_output(keyed_server: TetherServer) -> None:
    with keyed(keyed_server) as a:

        def refuse(chunk: dict[str, Any], stream: UIStream) -> None:
            if chunk["type"] == "tool-approval-request":
                sid = stream.headers["x-tether-session-id"]
                r = a.post(
                    f"/v1/sessions/{sid}/tool-approvals",
                    json={"tool_call_id": chunk["toolCallId"], "approved": False, "reason": "no"},
                )
                assert r.status_code == 202, r.text

        body = chat_body(new_chat_id(), user("clean up"), agent="careful")
        s = read_ui(a, "POST", CHAT, body=body, on_chunk=refuse)
    assert s.status == 200, s.body
    mid, start = opening(s)
    call = s.chunks[2]["toolCallId"]
    assert s.chunks == [
        *start,
        {"type": "tool-input-start", "toolCallId": call, "toolName": "delete"},
        {
            "type": "tool-input-available",
            "toolCallId": call,
            "toolName": "delete",
            "input": {"path": "/tmp/x"},
        },
        {"type": "tool-approval-request", "approvalId": call, "toolCallId": call},
        {"type": "tool-output-denied", "toolCallId": call},
        {"type": "finish-step"},
        {"type": "start-step"},
        *text_chunks(f"{mid}:2", ["refused: not approved: no"]),
        *FINISH,
    ]


# -- the real AI SDK under Node ------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if node:
        return node
    reason = "the AI SDK test needs Node.js: `node` not found on PATH"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def test_the_real_ai_sdk_sends_resumes_and_chats(
    server: TetherServer, client: httpx.Client
) -> None:
    node = _node()
    if not (AISDK_DIR / "node_modules" / "ai").is_dir():
        pytest.fail(
            f"the `ai` package is not installed in {AISDK_DIR / 'node_modules'}: "
            f"run `make test`, or `npm ci` in {AISDK_DIR}"
        )
    proc = subprocess.run(
        [node, "run.mjs", server.base_url],
        cwd=AISDK_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"run.mjs failed:\n{proc.stderr}\n{proc.stdout}"
    out = json.loads(proc.stdout)

    count = out["count"]
    assert count["text"] == "1 2 3"
    assert count["types"] == [
        "start", "start-step", "text-start", "text-delta", "text-delta", "text-delta",
        "text-end", "finish-step", "finish",
    ]  # fmt: skip
    assert count["message"]["role"] == "assistant"
    assert count["message"]["parts"] == [
        {"type": "step-start"},
        {"type": "text", "text": "1 2 3", "state": "done"},
    ]
    sid = count["message"]["metadata"]["tether"]["sessionId"]
    assert client.get(f"/v1/sessions/{sid}").json()["messages"][1]["id"] == count["message"]["id"]

    resume = out["resume"]
    full = " ".join(str(i) for i in range(1, 41))
    assert resume["resumed"] == resume["uninterrupted"]  # the whole message, ids included
    assert resume["uninterrupted"]["parts"][1]["text"] == full
    assert len(resume["textAtReconnect"]) < len(full)  # reconnected mid-run...
    assert resume["resumedTypes"][:3] == ["start", "start-step", "text-start"]  # ...from its start
    assert resume["afterRunIsNull"] is True  # 204 once the run is over

    dropped = out["dropped"]
    assert dropped["text"] == " ".join(str(i) for i in range(1, 31))
    assert dropped["message"]["id"] == dropped["messageIdBeforeDrop"]
    assert len(dropped["textAtDrop"]) < len(dropped["text"])

    tool = out["tool"]
    assert tool["posted"] == 202
    call = tool["message"]["parts"][1]
    assert call["type"] == "tool-weather" and call["state"] == "output-available"
    assert call["input"] == {"city": "Paris"} and call["output"] == {"temp_c": 21}
    assert tool["text"] == 'Tool weather returned: {"temp_c": 21}'

    chat = out["chat"]
    assert chat["errors"] == [] and chat["status"] == "ready"
    steps = chat["steps"]

    def texts(step: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(m["role"], m["text"]) for m in step]

    assert texts(steps["first"]) == [("user", "/count 3"), ("assistant", "1 2 3")]
    assert texts(steps["second"]) == [
        ("user", "/count 3"), ("assistant", "1 2 3"), ("user", "/count 2"), ("assistant", "1 2"),
    ]  # fmt: skip
    assert texts(steps["regenerated"]) == texts(steps["second"])
    assert steps["regenerated"][3]["id"] != steps["second"][3]["id"]
    assert texts(steps["edited"]) == [("user", "/count 4"), ("assistant", "1 2 3 4")]
    assert steps["edited"][0]["id"] == steps["first"][0]["id"]
    session = client.get(f"/v1/sessions/{chat['sessionId']}").json()
    assert [m["id"] for m in session["messages"]][1:] == [steps["edited"][1]["id"]]
    assert len(session["messages"][0]["siblings"]) == 2  # the edit is a branch

    chat_resume = out["chatResume"]
    assert chat_resume["errors"] == []
    assert chat_resume["statuses"] == ["ready", "ready", "ready"]
    assert chat_resume["resumed"] == [chat_resume["original"]]
    assert chat_resume["original"]["parts"][1]["text"] == " ".join(str(i) for i in range(1, 31))
    assert chat_resume["afterRun"] == []
