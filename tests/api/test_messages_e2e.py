"""The Messages front, driven by the official ``anthropic`` package.

One real ``tether serve`` (keys required) sits in front of the fake upstream,
which speaks Anthropic's and OpenAI's real streaming wire formats; every test
that can runs against both: ``anthropic/...`` models get the client's request
passed through (sanitised), ``openai/...`` models get it translated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from api.test_openai_gateway import ThreadedUpstream
from helpers.server import TetherServer
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

KEY = "sk-upstream-2f8e6a1c9d04"
ANTHROPIC_KEY = "sk-ant-upstream-9b3d7e1f5a20"
TETHER_KEY, OTHER_KEY = "tk-messages-4c8a2e6f", "tk-other-1d5b9f3a"
CLAUDE = "anthropic/claude-sonnet-4-5"
GPT = "openai/gpt-4o-mini"
BOTH = pytest.mark.parametrize("model", [CLAUDE, GPT], ids=["anthropic-wire", "openai-wire"])
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeUpstream, TetherServer]]:
    base = tmp_path_factory.mktemp("messages")
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
    upstream.replies.clear()
    upstream.requests.clear()
    return upstream


@pytest.fixture
def server(stack: tuple[FakeUpstream, TetherServer]) -> TetherServer:
    return stack[1]


@pytest.fixture
def client(server: TetherServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=server.base_url, api_key=TETHER_KEY, max_retries=0, timeout=30
    ) as c:
        yield c


@pytest.fixture
def http(server: TetherServer) -> Iterator[httpx.Client]:
    headers = {"x-api-key": TETHER_KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
        yield c


def upstream_turns(fake: FakeUpstream) -> list[Any]:
    """The messages of the upstream requests (not the count_tokens ones)."""
    return [
        r.body["messages"] for r in fake.requests if r.path.endswith(("/messages", "/completions"))
    ]


def sse(lines: Iterator[str]) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(event, id or None, data) of each SSE frame; comments skipped."""
    name = event_id = data = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data is not None:
            assert name is not None
            yield name, event_id, json.loads(data)
            name = event_id = data = None


# -- create and stream ---------------------------------------------------------------


@BOTH
def test_create_answers_a_whole_message(
    client: anthropic.Anthropic, fake: FakeUpstream, model: str
) -> None:
    fake.script = Script(text="Paris is the capital.", usage=(20, 6))
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Capital of France?"}],
    )
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == "Paris is the capital."
    assert (message.role, message.model, message.stop_reason) == ("assistant", model, "end_turn")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 6)
    assert raw.headers["x-tether-session-id"].startswith("ses_")
    assert raw.headers["x-tether-stream-url"].startswith("/v1/messages/")
    (request,) = fake.requests
    if model == CLAUDE:
        assert request.headers["x-api-key"] == ANTHROPIC_KEY
        assert request.body == {
            "model": "claude-sonnet-4-5",
            "max_tokens": 200,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Capital of France?"}],
            "stream": True,
        }
    else:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ]
        assert request.body["max_tokens"] == 200


@BOTH
def test_stream_text(client: anthropic.Anthropic, fake: FakeUpstream, model: str) -> None:
    fake.script = Script(text="One two three four.")
    with client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Count"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "One two three four."
    assert len(pieces) > 1
    assert final.content[0].type == "text"
    assert final.content[0].text == "One two three four."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7
    assert len(fake.requests) == 1  # the prefetched upstream request was the run's


@BOTH
def test_a_tool_use_round_trip_over_two_requests(
    client: anthropic.Anthropic, fake: FakeUpstream, model: str
) -> None:
    fake.replies.append(
        Script(
            text="Let me check.",
            tool_calls=[FakeToolCall("get_weather", '{"city": "Paris"}', id="toolu_w1")],
        )
    )
    fake.replies.append(Script(text="It is 21C in Paris."))
    question = {"role": "user", "content": "Weather in Paris?"}
    with client.messages.stream(
        model=model, max_tokens=300, tools=[WEATHER], messages=[question]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "21C, sunny"}
    second = client.messages.create(
        model=model,
        max_tokens=300,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "It is 21C in Paris."
    last = upstream_turns(fake)[-1]
    if model == CLAUDE:
        assert last[-1] == {"role": "user", "content": [result]}
        assert fake.requests[-1].body["tools"] == [WEATHER]
    else:
        assert last[-1] == {"role": "tool", "tool_call_id": call.id, "content": "21C, sunny"}
        assert last[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_thinking_signatures_reach_the_client_and_go_back_upstream(
    client: anthropic.Anthropic, fake: FakeUpstream, http: httpx.Client
) -> None:
    """An Anthropic upstream's signed thinking (and redacted thinking) reaches the client
    as signature_delta, is kept in the session's log, and a follow-up sends it back
    upstream as the client holds it, with cache_control intact."""
    fake.replies.append(
        Script(
            reasoning="The user greets me.",
            signature="sig-E2E-1",
            redacted="ENC-DATA==",
            text="Hello!",
        )
    )
    fake.replies.append(Script(text="Again, hello."))
    thinking = {"type": "enabled", "budget_tokens": 1024}
    system = [{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}]
    question = {
        "role": "user",
        "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
    }
    signatures = []
    with client.messages.stream(
        model=CLAUDE, max_tokens=2048, thinking=thinking, system=system, messages=[question]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "signature_delta":
                signatures.append(event.delta.signature)
        first = stream.get_final_message()
        sid = stream.response.headers["x-tether-session-id"]
    assert signatures == ["sig-E2E-1"]
    assert [b.type for b in first.content] == ["thinking", "redacted_thinking", "text"]
    assert (first.content[0].thinking, first.content[0].signature) == (
        "The user greets me.",
        "sig-E2E-1",
    )
    assert first.content[1].data == "ENC-DATA=="
    assert fake.requests[0].body["system"] == system
    assert fake.requests[0].body["messages"] == [question]
    assert fake.requests[0].body["thinking"] == thinking

    snapshot = http.get(
        f"/v1/sessions/{sid}", headers={"authorization": f"Bearer {TETHER_KEY}"}
    ).json()
    reasoning = [p for p in snapshot["messages"][-1]["parts"] if p["kind"] == "reasoning"]
    assert [(p.get("signature"), p.get("redacted")) for p in reasoning] == [
        ("sig-E2E-1", None),
        (None, "ENC-DATA=="),
    ]

    assistant = {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in first.content],
    }
    client.messages.create(
        model=CLAUDE,
        max_tokens=2048,
        thinking=thinking,
        system=system,
        messages=[question, assistant, {"role": "user", "content": "Again"}],
    )
    sent = fake.requests[-1].body["messages"][1]["content"]
    assert sent[0] == {
        "type": "thinking",
        "thinking": "The user greets me.",
        "signature": "sig-E2E-1",
    }
    assert sent[1] == {"type": "redacted_thinking", "data": "ENC-DATA=="}


def test_thinking_to_an_openai_upstream_is_translated_without_thinking_blocks(
    client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    fake.script = Script(reasoning="Hmm.", text="Hi there.")
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Earlier.", "signature": "sig-old"},
            {"type": "text", "text": "Hello."},
        ],
    }
    message = client.messages.create(
        model=GPT,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {"role": "user", "content": "Hi"},
            assistant,
            {"role": "user", "content": "Again"},
        ],
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Hmm."
    body = fake.requests[-1].body
    assert body["messages"][1] == {"role": "assistant", "content": "Hello."}
    assert "thinking" not in body and "sig-old" not in json.dumps(body)


# -- count_tokens ------------------------------------------------------------------------


def test_count_tokens_is_exact_from_an_anthropic_upstream(
    client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    fake.counted_tokens = 4321
    raw = client.messages.with_raw_response.count_tokens(
        model=CLAUDE,
        system="Be brief.",
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert raw.parse().input_tokens == 4321
    assert raw.headers["x-tether-token-count"] == "exact"
    (request,) = fake.requests
    assert request.path == "/v1/messages/count_tokens"
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert request.body == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be brief.",
        "tools": [WEATHER],
    }


def test_count_tokens_is_an_estimate_for_other_upstreams(
    client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    short = client.messages.with_raw_response.count_tokens(
        model=GPT, messages=[{"role": "user", "content": "Hi"}]
    )
    long = client.messages.count_tokens(
        model=GPT, messages=[{"role": "user", "content": "Hi " * 400}]
    )
    assert short.headers["x-tether-token-count"] == "estimate"
    assert 0 < short.parse().input_tokens < long.input_tokens
    assert fake.requests == []


# -- auth, errors -------------------------------------------------------------------------


def test_bearer_auth_works_too_and_a_wrong_key_is_401_in_anthropics_shape(
    server: TetherServer, fake: FakeUpstream
) -> None:
    with anthropic.Anthropic(base_url=server.base_url, auth_token=TETHER_KEY, max_retries=0) as c:
        ok = c.messages.create(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
    assert ok.content[0].type == "text"
    wrong = anthropic.Anthropic(base_url=server.base_url, api_key="tk-wrong", max_retries=0)
    with wrong, pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


def test_bad_requests_get_anthropics_error_shape(http: httpx.Client, fake: FakeUpstream) -> None:
    cases = [
        (
            {"model": CLAUDE, "messages": [{"role": "user", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            {"model": "nope/none", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            404,
            "not_found_error",
        ),
        (
            {
                "model": CLAUDE,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            400,
            "invalid_request_error",
        ),
    ]
    for body, status, kind in cases:
        r = http.post("/v1/messages", json=body)
        assert r.status_code == status, r.text
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == kind
    assert fake.requests == []


def test_an_upstream_refusal_is_an_http_error_and_a_mid_stream_failure_an_error_event(
    client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    fake.fail_next(1, 400, message="prompt is too long")
    with (
        pytest.raises(anthropic.BadRequestError) as caught,
        client.messages.stream(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "x"}]
        ) as s,
    ):
        s.get_final_message()
    assert caught.value.body["error"]["type"] == "invalid_request_error"

    fake.script = Script(
        text="Partial answer", stream_error={"type": "invalid_request_error", "message": "nope"}
    )
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        client.messages.stream(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "x"}]
        ) as s,
    ):
        s.get_final_message()
    assert "nope" in str(failed.value)


# -- resuming --------------------------------------------------------------------------


def test_a_cut_stream_resumes_from_its_last_id_with_nothing_twice(
    http: httpx.Client, fake: FakeUpstream
) -> None:
    fake.script = Script(reasoning="Think first.", text="A long answer in many words.")
    body = {
        "model": CLAUDE,
        "max_tokens": 300,
        "stream": True,
        "messages": [{"role": "user", "content": "Go"}],
    }
    with http.stream("POST", "/v1/messages", json=body) as r:
        assert r.status_code == 200
        url = r.headers["x-tether-stream-url"]
        frames = list(sse(r.iter_lines()))
    assert frames[-1][0] == "message_stop"
    ids = [i for i, (_, event_id, _) in enumerate(frames, 1) if event_id is not None]
    assert len(ids) > 5
    base = url.split("?")[0]
    for cut in (ids[0], ids[3], ids[len(ids) // 2], ids[-2]):
        last_id = frames[cut - 1][1]
        with http.stream("GET", base, params={"offset": last_id}) as r:
            assert r.status_code == 200
            rest = list(sse(r.iter_lines()))
        assert frames[:cut] + rest == frames
    with http.stream("GET", url) as r:  # from the start: the same frames, byte for byte
        again = list(sse(r.iter_lines()))
    assert again == frames


def test_another_key_cannot_read_the_stream(http: httpx.Client, fake: FakeUpstream) -> None:
    r = http.post(
        "/v1/messages",
        json={"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]},
    )
    url = r.headers["x-tether-stream-url"]
    other = http.get(url, headers={"x-api-key": OTHER_KEY})
    assert other.status_code == 404
    assert other.json()["error"]["type"] == "not_found_error"


def test_the_upstream_keys_never_reach_a_client_or_the_log(
    client: anthropic.Anthropic, fake: FakeUpstream, server: TetherServer
) -> None:
    fake.fail_next(1, 401, message=f"invalid x-api-key {ANTHROPIC_KEY}")
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "x"}]
        )
    seen = json.dumps(caught.value.body) + str(caught.value)
    fake.fail_next(1, 401, message=f"bad key {ANTHROPIC_KEY}")
    with pytest.raises(anthropic.APIStatusError) as counted:
        client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "x"}])
    seen += json.dumps(counted.value.body)
    for text in (seen, server.output()):
        assert ANTHROPIC_KEY not in text and KEY not in text


def test_an_idempotency_key_retry_gets_the_first_message_and_starts_no_second_run(
    client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    fake.script = Script(text="Only once.")
    ask = {"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "Once"}]}
    headers = {"Idempotency-Key": "msg-retry-7f3a"}
    first = client.messages.with_raw_response.create(**ask, extra_headers=headers)  # type: ignore[arg-type]
    again = client.messages.with_raw_response.create(**ask, extra_headers=headers)  # type: ignore[arg-type]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().id == first.parse().id
    assert again.parse().content == first.parse().content
    assert len(fake.requests) == 1


def test_the_demo_model_answers_through_the_messages_front(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="demo", max_tokens=50, messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].type == "text"
    assert "hello" in message.content[0].text
