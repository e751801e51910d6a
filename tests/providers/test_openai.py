"""OpenAIProvider against the fake upstream, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httpx
import pytest

from tether.providers._http import transport_error
from tether.providers.base import (
    ChatMessage,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    ToolSpec,
    Usage,
)
from tether.providers.openai import OpenAIProvider

from .common import KEY, argument_deltas, collect, text_of
from .fake_upstreams import FakeToolCall, FakeUpstream, Script, pieces

DETAIL = "httpx-detail-e3b0c442"


def ask(text: str = "Hi", model: str = "gpt-4o-mini") -> ModelRequest:
    return ModelRequest(model, [ChatMessage("user", text)], run_id="run-1")


async def test_streams_text_then_usage(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    fake.script = Script(text="Hello there, général Kenobi 🌍 ünïcode.", usage=(21, 6))
    items = await collect(openai, ask())
    assert items == [TextDelta(p) for p in pieces(fake.script.text)] + [Usage(21, 6)]


async def test_usage_breaks_out_cached_prompt_and_reasoning_tokens(
    fake: FakeUpstream, openai: OpenAIProvider
) -> None:
    fake.script = Script(text="ok", usage=(1200, 300), cache=(1024, 0), reasoning_tokens=256)
    items = await collect(openai, ask())
    usage = items[-1]
    assert usage == Usage(1200, 300, cache_read_tokens=1024, reasoning_tokens=256)
    assert isinstance(usage, Usage)
    assert usage.counts() == {
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 1024,
        "reasoning_tokens": 256,
    }


async def test_sends_the_openai_request(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    await collect(openai, ask("Hi there"))
    (req,) = fake.requests
    assert req.method == "POST"
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi there"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_converts_messages_and_tools(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    request = ModelRequest(
        "gpt-4o-mini",
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Weather in Paris and Rome?"),
            ChatMessage("assistant", "", [call, ToolCall("call_2", "get_weather", "")]),
            ChatMessage("tool", '{"temp": 21}', tool_call_id="call_1"),
            ChatMessage("tool", "city not found", tool_call_id="call_2", is_error=True),
            ChatMessage("assistant", "Paris is 21C."),
            ChatMessage("user", "Thanks"),
        ],
        tools=[
            ToolSpec(
                "get_weather",
                "Current weather",
                {"type": "object", "properties": {"city": {"type": "string"}}},
            ),
            ToolSpec("now"),
        ],
    )
    await collect(openai, request)
    body = fake.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: city not found"},
        {"role": "assistant", "content": "Paris is 21C."},
        {"role": "user", "content": "Thanks"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_streams_reasoning_first(
    fake: FakeUpstream, openai: OpenAIProvider, field: str
) -> None:
    fake.script = Script(reasoning="Let me think.", text="Four.", reasoning_field=field)
    items = await collect(openai, ask("2+2?"))
    assert items == [
        ReasoningDelta("Let"),
        ReasoningDelta(" me"),
        ReasoningDelta(" think."),
        TextDelta("Four."),
        Usage(11, 7),
    ]


async def test_assembles_tool_calls(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    args_a = '{"city": "Paris", "unit": "celsius"}'
    args_b = '{"query": "caf\\u00e9 \\"quoted\\""}'
    fake.script = Script(
        text="Checking.",
        tool_calls=[
            FakeToolCall("get_weather", args_a, id="call_A"),
            FakeToolCall("search", args_b, id="call_B"),
        ],
        fragment=3,
        usage=(40, 30),
    )
    items = await collect(openai, ask())
    assert items == [
        TextDelta("Checking."),
        *argument_deltas("call_A", "get_weather", args_a, 3),
        *argument_deltas("call_B", "search", args_b, 3),
        ToolCallItem(ToolCall("call_A", "get_weather", args_a)),
        ToolCallItem(ToolCall("call_B", "search", args_b)),
        Usage(40, 30),
    ]


async def test_tool_call_only_response(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    fake.script = Script(text="", tool_calls=[FakeToolCall("now", "{}", id="call_now")])
    items = await collect(openai, ask())
    assert items == [
        ToolCallDelta("call_now", "now", "{}"),
        ToolCallItem(ToolCall("call_now", "now", "{}")),
        Usage(11, 7),
    ]


async def test_non_streaming_json_reply(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    fake.script = Script(
        text="Whole answer.",
        tool_calls=[FakeToolCall("now", '{"tz": "UTC"}', id="call_1")],
        json_reply=True,
    )
    items = await collect(openai, ask())
    assert items == [
        TextDelta("Whole answer."),
        ToolCallDelta("call_1", "now", '{"tz": "UTC"}'),
        ToolCallItem(ToolCall("call_1", "now", '{"tz": "UTC"}')),
        Usage(11, 7),
    ]


async def test_no_key_no_authorization_header(fake: FakeUpstream) -> None:
    provider = OpenAIProvider(base_url=fake.openai_base_url + "/", models=["llama3.2"])
    try:
        items = await collect(provider, ask(model="llama3.2"))
    finally:
        await provider.aclose()
    assert text_of(items) == fake.script.text
    assert "authorization" not in fake.requests[0].headers


async def test_extra_headers_and_body(fake: FakeUpstream) -> None:
    provider = OpenAIProvider(
        base_url=fake.openai_base_url,
        api_key=KEY,
        headers={"X-Title": "tether tests"},
        extra_body={"temperature": 0.2, "model": "ignored"},
    )
    try:
        await collect(provider, ask())
    finally:
        await provider.aclose()
    req = fake.requests[0]
    assert req.headers["x-title"] == "tether tests"
    assert req.body["temperature"] == 0.2
    assert req.body["model"] == "gpt-4o-mini"  # the request's own fields win


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_rate_limits_and_server_errors_are_transient(
    fake: FakeUpstream, openai: OpenAIProvider, status: int
) -> None:
    fake.fail_next(1, status)
    with pytest.raises(ProviderError) as info:
        await collect(openai, ask())
    assert info.value.transient is True
    assert info.value.status == status
    # The failure was one request only: the next attempt streams.
    assert text_of(await collect(openai, ask())) == fake.script.text


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_permanent_with_the_upstream_message(
    fake: FakeUpstream, openai: OpenAIProvider, status: int
) -> None:
    fake.fail_next(1, status, message="The model `gpt-9` does not exist.")
    with pytest.raises(ProviderError) as info:
        await collect(openai, ask())
    assert info.value.transient is False
    assert info.value.status == status
    assert "The model `gpt-9` does not exist." in str(info.value)


async def test_x_should_retry_overrides_the_status(
    fake: FakeUpstream, openai: OpenAIProvider
) -> None:
    fake.fail_next(1, 400, headers={"x-should-retry": "true"})
    with pytest.raises(ProviderError) as info:
        await collect(openai, ask())
    assert info.value.transient is True


async def test_key_never_leaks(
    fake: FakeUpstream, openai: OpenAIProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ProviderError] = []
    # An upstream that echoes the key back, as some proxies do.
    fake.fail_next(1, 401, message=f"Incorrect API key provided: {KEY}.")
    fake.fail_next(1, 429, message=f"Too many requests for key {KEY}")
    fake.fail_next(1, 500)
    for _ in range(3):
        with pytest.raises(ProviderError) as info:
            await collect(openai, ask())
        errors.append(info.value)
    fake.script = Script(stream_error={"message": f"bad key {KEY}", "code": 502})
    with pytest.raises(ProviderError) as info:
        await collect(openai, ask())
    errors.append(info.value)
    fake.script = Script()
    assert text_of(await collect(openai, ask())) == fake.script.text

    assert "Incorrect API key provided: ***." in str(errors[0])
    for err in errors:
        assert KEY not in str(err)
        assert KEY not in repr(err)
        assert all(KEY not in str(arg) for arg in err.args)
    assert KEY not in repr(openai)
    assert KEY not in str(openai)
    assert KEY not in repr(vars(openai))
    assert caplog.records  # the capture did see logging (httpx, ours)
    assert KEY not in caplog.text
    assert all(KEY not in repr(r.args) for r in caplog.records)


async def test_read_timeout_mid_stream_is_transient(fake: FakeUpstream) -> None:
    fake.script = Script(text="one two three", hang_after=1)
    provider = OpenAIProvider(base_url=fake.openai_base_url, api_key=KEY, timeout=0.2)
    received: list[StreamItem] = []
    try:
        with pytest.raises(ProviderError) as info:
            async for item in provider.stream(ask()):
                received.append(item)
    finally:
        await provider.aclose()
    assert received == [TextDelta("one")]
    assert info.value.transient is True
    assert info.value.status is None
    assert "timed out" in str(info.value)


async def test_timeout_before_headers_is_transient(fake: FakeUpstream) -> None:
    fake.script = Script(stall_before_headers=True)
    provider = OpenAIProvider(base_url=fake.openai_base_url, api_key=KEY, timeout=0.2)
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider, ask())
    finally:
        await provider.aclose()
    assert info.value.transient is True


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        provider = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        try:
            with pytest.raises(ProviderError) as info:
                await collect(provider, ask())
        finally:
            await provider.aclose()
    assert info.value.transient is True
    assert KEY not in str(info.value)


async def test_truncated_stream_is_transient(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    fake.script = Script(text="cut short", truncate=True)
    received: list[StreamItem] = []
    with pytest.raises(ProviderError) as info:
        async for item in openai.stream(ask()):
            received.append(item)
    assert text_of(received) == "cut short"
    assert info.value.transient is True


@pytest.mark.parametrize(("code", "transient"), [(502, True), (400, False), (None, True)])
async def test_error_inside_the_stream(
    fake: FakeUpstream, openai: OpenAIProvider, code: int | None, transient: bool
) -> None:
    fake.script = Script(
        text="partial", stream_error={"message": "Provider went away", "code": code}
    )
    with pytest.raises(ProviderError) as info:
        await collect(openai, ask())
    assert info.value.transient is transient
    assert "Provider went away" in str(info.value)


async def test_cancel_closes_the_upstream_connection(
    fake: FakeUpstream, openai: OpenAIProvider
) -> None:
    fake.script = Script(text="never ending story", hang_after=1)
    first = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(openai.stream(ask())) as stream:
            async for _ in stream:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    assert fake.disconnects == 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await fake.wait_disconnect()
    assert fake.disconnects == 1


async def test_refresh_models(fake: FakeUpstream, openai: OpenAIProvider) -> None:
    assert openai.models() == ["gpt-4o-mini"]
    fake.models = ["gpt-4o", "o3-mini"]
    assert await openai.refresh_models() == ["gpt-4o", "o3-mini"]
    assert openai.models() == ["gpt-4o", "o3-mini"]
    req = fake.requests[-1]
    assert (req.method, req.path) == ("GET", "/v1/models")
    assert req.headers["authorization"] == f"Bearer {KEY}"


async def test_refresh_models_error_keeps_the_list(
    fake: FakeUpstream, openai: OpenAIProvider
) -> None:
    fake.fail_next(1, 401, message=f"bad key {KEY}")
    with pytest.raises(ProviderError) as info:
        await openai.refresh_models()
    assert (info.value.status, info.value.transient) == (401, False)
    assert KEY not in str(info.value)
    assert openai.models() == ["gpt-4o-mini"]


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout(DETAIL),
        httpx.ReadTimeout(DETAIL),
        httpx.WriteTimeout(DETAIL),
        httpx.PoolTimeout(DETAIL),
        httpx.ConnectError(DETAIL),
        httpx.ReadError(DETAIL),
        httpx.RemoteProtocolError(DETAIL),
    ],
)
def test_network_failures_are_transient(exc: httpx.RequestError) -> None:
    err = transport_error("openai", exc)
    assert err.transient is True
    assert err.status is None
    assert DETAIL not in str(err)  # httpx's own text is not ours to vet, so not echoed


async def test_shared_client_is_not_closed(fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        provider = OpenAIProvider(base_url=fake.openai_base_url, client=client)
        await collect(provider, ask())
        await provider.aclose()
        assert not client.is_closed


def test_rejects_bad_base_url() -> None:
    with pytest.raises(ValueError, match="base URL"):
        OpenAIProvider(base_url="ftp://example.com")
    with pytest.raises(ValueError):
        OpenAIProvider(base_url="http://x", name="a/b")
