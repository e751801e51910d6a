"""The OpenAI-compatible gateway, driven by the official ``openai`` package.

One real ``tether serve`` (keys required) sits in front of the fake upstream,
which speaks OpenAI's and Anthropic's real streaming wire formats; both live
for the whole module (the fake on a thread of its own, so the tests can use the
synchronous clients).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from helpers.server import TetherServer
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

KEY = "sk-upstream-7d41c2e9b0a5f3"
ANTHROPIC_KEY = "sk-ant-upstream-3c9e1f0d7b2a"
TETHER_KEY, OTHER_KEY = "tk-gateway-5a1f9e3c", "tk-other-8b2d4c6e"
MODEL = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-sonnet-4-5"
#: What a request may carry to the upstream, besides the sampling options.
STRUCTURAL = {"model", "messages", "stream", "stream_options", "tools", "tool_choice"}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


class ThreadedUpstream:
    """A FakeUpstream served by an event loop on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> FakeUpstream:
        self.thread.start()

        async def start() -> FakeUpstream:
            return await FakeUpstream().start()

        self.fake = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self.fake

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeUpstream, TetherServer]]:
    base = tmp_path_factory.mktemp("gateway")
    upstream = ThreadedUpstream()
    fake = upstream.start()
    env = {
        **os.environ,
        "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
        "TETHER_OPENAI_API_KEY": KEY,
        "TETHER_OPENAI_MODELS": "gpt-4o-mini",
        "TETHER_ANTHROPIC_BASE_URL": fake.url,
        "TETHER_ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5",
        "TETHER_API_KEYS": f"{TETHER_KEY},{OTHER_KEY}",
    }
    server = TetherServer(
        base / "data", log_path=base / "server.log", env=env, extra_args=["--log-level", "debug"]
    )
    try:
        with server:
            yield fake, server
    finally:
        upstream.stop()


@pytest.fixture
def fake(stack: tuple[FakeUpstream, TetherServer]) -> FakeUpstream:
    upstream = stack[0]
    upstream.script = Script()
    upstream.requests.clear()
    return upstream


@pytest.fixture
def server(stack: tuple[FakeUpstream, TetherServer]) -> TetherServer:
    return stack[1]


@pytest.fixture
def client(server: TetherServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key=TETHER_KEY, max_retries=0, timeout=30
    ) as c:
        yield c


@pytest.fixture
def http(server: TetherServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TETHER_KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
        yield c


def sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    """(id, data) of each event of an SSE body; comments skipped."""
    event_id, data = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data is not None:
            yield event_id, data
            event_id, data = None, None


def chunks_of(events: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    return [json.loads(d) for _, d in events if d != "[DONE]"]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


# -- completions ----------------------------------------------------------------


def test_models_are_listed_in_openai_shape(client: openai.OpenAI) -> None:
    models = client.models.list().data
    ids = [m.id for m in models]
    assert "demo" in ids and MODEL in ids and CLAUDE in ids
    assert all(m.object == "model" and isinstance(m.created, int) for m in models)


def test_a_non_streamed_completion(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.script = Script(text="Paris is the capital.", reasoning="Recall geography.")
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": [{"type": "text", "text": "And of France?"}]},
        ],
    )
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Paris is the capital."
    assert choice.message.model_extra["reasoning_content"] == "Recall geography."
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 7, 18)

    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "And of France?"},
    ]
    session_id = raw.headers["x-tether-session-id"]
    assert raw.headers["x-tether-run-id"].startswith("run_")
    assert raw.headers["x-tether-stream-url"].startswith(
        f"/v1/chat/completions/{session_id}/stream?offset="
    )


def test_usage_reports_cached_and_reasoning_tokens_in_openai_shape(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.script = Script(text="ok", usage=(1200, 300), cache=(1024, 0), reasoning_tokens=256)
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 1024
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 256
    fake.script = Script(text="Bonjour.", usage=(5000, 40), cache=(4000, 600))
    r = client.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    assert r.usage is not None and r.usage.prompt_tokens == 5000
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 4000


def test_a_streamed_completion_with_and_without_usage(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.script = Script(text="Streaming works, word by word.", usage=(21, 6))
    ask = [{"role": "user", "content": "Stream please"}]
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=ask, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming works, word by word."
    *body, finish, last = chunks
    assert finish.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in body)
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (21, 6)
    assert last.usage.total_tokens == 27

    plain = list(client.chat.completions.create(model=MODEL, messages=ask, stream=True))
    assert plain[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.choices for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == text


def test_a_tool_call_round_trip(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.script = Script(text="", tool_calls=[FakeToolCall("lookup", '{"q": "tether"}', "call_9")])
    ask: list[Any] = [{"role": "user", "content": "Find tether"}]
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=ask, tools=[LOOKUP], tool_choice="auto", stream=True
    ):
        for delta_call in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(delta_call.index, {"arguments": ""})
            call["id"] = delta_call.id or call.get("id")
            call["name"] = delta_call.function.name or call.get("name")
            call["arguments"] += delta_call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"] == "call_9" and calls[0]["name"] == "lookup"
    assert json.loads(calls[0]["arguments"]) == {"q": "tether"}
    first = fake.requests[-1].body
    assert first["tools"] == [LOOKUP] and first["tool_choice"] == "auto"

    fake.script = Script(text="Found it: two hits.")
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "lookup", "arguments": calls[0]["arguments"]},
            }
        ],
    }
    tool = {"role": "tool", "tool_call_id": "call_9", "content": '{"hits": 2}'}
    r = client.chat.completions.create(
        model=MODEL, messages=[*ask, assistant, tool], tools=[LOOKUP]
    )
    assert r.choices[0].message.content == "Found it: two hits."
    assert r.choices[0].finish_reason == "stop"
    follow_up = fake.requests[-1].body["messages"]
    assert follow_up[0] == {"role": "user", "content": "Find tether"}
    assert follow_up[1]["role"] == "assistant" and follow_up[1]["content"] is None
    assert follow_up[1]["tool_calls"][0]["id"] == "call_9"
    assert json.loads(follow_up[1]["tool_calls"][0]["function"]["arguments"]) == {"q": "tether"}
    assert follow_up[2] == {"role": "tool", "tool_call_id": "call_9", "content": '{"hits": 2}'}


def test_a_non_streamed_tool_call(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.script = Script(
        text="Let me check.",
        tool_calls=[
            FakeToolCall("lookup", '{"q": "a"}', "call_a"),
            FakeToolCall("lookup", '{"q": "b"}', "call_b"),
        ],
    )
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Two lookups"}], tools=[LOOKUP]
    )
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and message.content == "Let me check."
    assert [(c.id, c.function.name) for c in message.tool_calls or []] == [
        ("call_a", "lookup"),
        ("call_b", "lookup"),
    ]
    assert [json.loads(c.function.arguments) for c in message.tool_calls or []] == [
        {"q": "a"},
        {"q": "b"},
    ]
    assert r.usage is not None and r.usage.total_tokens == 18


def test_the_demo_model(client: openai.OpenAI, fake: FakeUpstream) -> None:
    ask = [{"role": "user", "content": "/count 5"}]
    r = client.chat.completions.create(model="demo", messages=ask)
    assert r.choices[0].message.content == "1 2 3 4 5"
    assert r.usage is not None and r.usage.completion_tokens == 5
    streamed = client.chat.completions.create(model="demo", messages=ask, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "1 2 3 4 5"

    first = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": '/tool lookup {"q": 1}'}],
        tools=[LOOKUP],
    )
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    second = client.chat.completions.create(
        model="demo",
        messages=[
            {"role": "user", "content": '/tool lookup {"q": 1}'},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
    )
    assert second.choices[0].message.content == "Tool lookup returned: 42"
    assert fake.requests == []  # the demo model needs no upstream


def test_anthropic_models_get_tools_and_options_in_their_format(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.script = Script(text="Bonjour.")
    r = client.chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
        ],
        tools=[LOOKUP],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        parallel_tool_calls=False,
        temperature=0.5,
        max_completion_tokens=64,
        stop="END",
        seed=3,
    )
    assert r.choices[0].message.content == "Bonjour."
    assert r.usage is not None and r.usage.prompt_tokens == 11
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_KEY
    body = sent.body
    assert body["model"] == "claude-sonnet-4-5" and body["system"] == "Answer in French."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "lookup",
        "disable_parallel_tool_use": True,
    }
    assert body["tools"][0]["name"] == "lookup"
    assert (body["temperature"], body["max_tokens"], body["stop_sequences"]) == (0.5, 64, ["END"])
    assert "seed" not in body


# -- what reaches the upstream, and what never leaves the server -------------------


def test_only_whitelisted_fields_reach_the_upstream(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    evil = "sk-client-supplied-0b5e9d"
    options = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 40,
        "max_completion_tokens": 50,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "response_format": {"type": "text"},
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
    }
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        tools=[LOOKUP],
        tool_choice="required",
        n=1,
        user="end-user-1",
        metadata={"k": "v"},
        store=True,
        logit_bias={"50256": -100},
        extra_headers={"X-Api-Key": evil, "OpenAI-Organization": "org-evil"},
        extra_body={
            "api_key": evil,
            "base_url": "http://evil.example/v1",
            "unknown_field": {"nested": evil},
            "headers": {"authorization": f"Bearer {evil}"},
            "extra_body": {"api_key": evil},
            **options,
        },
    )
    sent = fake.requests[-1]
    assert set(sent.body) == STRUCTURAL | set(options)
    assert {k: sent.body[k] for k in options} == options
    assert sent.body["tool_choice"] == "required"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert evil not in json.dumps(sent.body) and evil not in json.dumps(sent.headers)
    assert "org-evil" not in json.dumps(sent.headers)
    assert TETHER_KEY not in json.dumps(sent.headers)


def test_upstream_keys_never_reach_clients_or_logs(
    client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream, server: TetherServer
) -> None:
    seen: list[str] = []

    def keep(r: httpx.Response) -> None:
        r.read()
        seen.append(json.dumps(dict(r.headers)) + r.text)

    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    keep(http.get("/v1/models"))
    keep(r := http.post("/v1/chat/completions", json=ask))
    keep(http.get(r.headers["x-tether-stream-url"]))
    keep(http.post("/v1/chat/completions", json={**ask, "stream": True}))
    keep(http.post("/v1/chat/completions", json={**ask, "model": CLAUDE}))
    keep(http.get(f"/v1/sessions/{r.headers['x-tether-session-id']}"))
    for status in (401, 400):
        for stream in (False, True):
            fake.fail_next(1, status=status, message=f"Incorrect API key provided: {KEY}")
            keep(http.post("/v1/chat/completions", json={**ask, "stream": stream}))
    fake.fail_next(1, status=401, message=f"invalid x-api-key {ANTHROPIC_KEY}")
    keep(http.post("/v1/chat/completions", json={**ask, "model": CLAUDE}))
    assert len(seen) == 11
    for text in [*seen, server.output()]:
        assert KEY not in text and ANTHROPIC_KEY not in text
    assert "DEBUG" in server.output()  # the log was as chatty as it gets


# -- errors ---------------------------------------------------------------------


def test_errors_come_in_openai_shape(
    client: openai.OpenAI, http: httpx.Client, server: TetherServer
) -> None:
    def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
        body = exc.value.response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}
        return body["error"]

    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="openai/no-such-model", messages=user)
    assert error_of(nf)["code"] == "model_not_found" and error_of(nf)["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=user, stream=True)

    bad_requests: list[dict[str, Any]] = [
        {"model": "demo", "messages": []},
        {"model": "demo", "messages": user, "n": 2},
        {"model": "demo", "messages": user, "temperature": "hot"},
        {"model": "demo", "messages": user, "tool_choice": "auto"},
        {"model": "demo", "messages": user, "stream_options": {"include_usage": True}},
        {"model": "demo", "messages": user, "tools": [{"type": "web_search"}]},
        {"model": "demo", "messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]},
        {"model": "demo", "messages": [{"role": "wizard", "content": "hi"}]},
        {
            "model": "demo",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ],
        },
        {
            "model": "demo",
            "messages": [
                *user,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ],
                },
                *user,
            ],
        },
    ]
    params = []
    for body in bad_requests:
        model, messages = body.pop("model"), body.pop("messages")
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model=model, messages=messages, extra_body=body)
        err = error_of(bad)
        assert err["type"] == "invalid_request_error" and err["message"]
        params.append(err["param"])
    assert params[:6] == [
        "messages",
        "n",
        "temperature",
        "tool_choice",
        "stream_options",
        "tools[0]",
    ]

    for raw in (b"{not json", b"[1, 2]", b'{"messages": []}'):
        r = http.post(
            "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"

    with (
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0) as anon,
        pytest.raises(openai.AuthenticationError) as denied,
    ):
        anon.chat.completions.create(model="demo", messages=user)
    assert error_of(denied)["code"] == "invalid_api_key"
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "demo"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["message"].startswith("You didn't provide an API key")


def test_upstream_errors_keep_their_meaning(client: openai.OpenAI, fake: FakeUpstream) -> None:
    user = [{"role": "user", "content": "hi"}]
    fake.fail_next(1, status=400, message="Invalid schema for function 'lookup'.")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=user)
    assert "Invalid schema for function 'lookup'." in bad.value.message
    fake.fail_next(1, status=400, message="Invalid schema for function 'lookup'.")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=user, stream=True)
    fake.fail_next(1, status=401, message="Incorrect API key provided.")
    with pytest.raises(openai.InternalServerError) as upstream:
        client.chat.completions.create(model=MODEL, messages=user)
    assert upstream.value.status_code == 502  # the server's upstream key, not the client's

    fake.script = Script(text="Half an answer", stream_error={"message": "overloaded"})
    got: list[str] = []
    with pytest.raises(openai.APIError) as mid:
        for chunk in client.chat.completions.create(model=MODEL, messages=user, stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "Half an answer"  # not retried: what was sent cannot be taken back
    assert "overloaded" in mid.value.message
    assert len(fake.requests) == 4


# -- resuming -------------------------------------------------------------------


def test_a_cut_stream_resumes_from_the_last_event_id(http: httpx.Client) -> None:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "/count 40 15"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    head: list[tuple[str | None, str]] = []
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        url = r.headers["x-tether-stream-url"]
        for event in sse(r.iter_lines()):
            head.append(event)
            if len(head) == 10:
                break  # and hang up, mid-run
    last_id = head[-1][0]
    assert last_id is not None
    path = url.split("?")[0]
    with http.stream("GET", path, params={"offset": last_id}) as r:
        assert r.status_code == 200
        rest = list(sse(r.iter_lines()))
    with http.stream("GET", url) as r:
        full = list(sse(r.iter_lines()))
    by_header = list(sse(http.get(path, headers={"Last-Event-ID": last_id}).iter_lines()))

    assert head + rest == full
    assert by_header == rest
    assert full[-1] == (None, "[DONE]")
    ids = [i for i, _ in full if i is not None]
    assert len(ids) == len(set(ids)) == len(full) - 1 and ids == sorted(ids)
    chunks = chunks_of(full)
    assert content_of(chunks) == " ".join(str(n) for n in range(1, 41))
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 40
    # Read after the end: only the terminator is left.
    assert list(sse(http.get(path, params={"offset": ids[-1]}).iter_lines())) == [(None, "[DONE]")]


def test_the_stream_url_belongs_to_the_caller(http: httpx.Client, server: TetherServer) -> None:
    r = http.post(
        "/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "/count 2"}]},
    )
    url = r.headers["x-tether-stream-url"]
    other = httpx.get(
        server.base_url + url, headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=10
    )
    assert other.status_code == 404 and other.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(server.base_url + url, timeout=10).status_code == 401
    assert http.get(url.split("?")[0], params={"offset": "garbage"}).status_code == 400
    session = r.headers["x-tether-session-id"]
    native = http.get(f"/v1/sessions/{session}").json()
    assert [m["role"] for m in native["messages"]] == ["user", "assistant"]
    assert native["messages"][1]["parts"][0]["text"] == "1 2"
