"""AnthropicProvider against the fake upstream, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import (
    ChatMessage,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallItem,
    ToolSpec,
    Usage,
)

from .common import KEY, argument_deltas, collect, text_of
from .fake_upstreams import FakeToolCall, FakeUpstream, Script, pieces

MODEL = "claude-sonnet-4-5"


def ask(text: str = "Hi") -> ModelRequest:
    return ModelRequest(MODEL, [ChatMessage("user", text)], run_id="run-1")


async def test_streams_thinking_text_tool_and_usage(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    args = '{"city": "Paris", "unit": "celsius"}'
    fake.script = Script(
        reasoning="The user wants weather.",
        text="Let me check… 🌦 météo.",
        tool_calls=[FakeToolCall("get_weather", args, id="toolu_01A")],
        usage=(472, 89),
        fragment=4,
    )
    items = await collect(anthropic, ask("Weather?"))
    assert items == [
        *[ReasoningDelta(p) for p in pieces("The user wants weather.")],
        ReasoningSignature(Script().signature),
        *[TextDelta(p) for p in pieces("Let me check… 🌦 météo.")],
        *argument_deltas("toolu_01A", "get_weather", args, 4),
        ToolCallItem(ToolCall("toolu_01A", "get_weather", args)),
        Usage(472, 89),
    ]


async def test_usage_counts_the_whole_prompt_and_breaks_out_the_cache(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    fake.script = Script(text="ok", usage=(5000, 40), cache=(4000, 600))
    items = await collect(anthropic, ask())
    usage = items[-1]
    assert usage == Usage(5000, 40, cache_read_tokens=4000, cache_write_tokens=600)
    assert isinstance(usage, Usage)
    assert usage.counts() == {
        "input_tokens": 5000,
        "output_tokens": 40,
        "cache_read_tokens": 4000,
        "cache_write_tokens": 600,
    }


async def test_tool_call_without_arguments(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    fake.script = Script(text="", tool_calls=[FakeToolCall("now", "", id="toolu_now")])
    items = await collect(anthropic, ask())
    assert items == [ToolCallItem(ToolCall("toolu_now", "now", "{}")), Usage(11, 7)]


async def test_sends_the_messages_request(fake: FakeUpstream, anthropic: AnthropicProvider) -> None:
    await collect(anthropic, ask("Hello"))
    (req,) = fake.requests
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert req.body == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "stream": True,
    }


async def test_converts_messages_and_tools(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    request = ModelRequest(
        MODEL,
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("system", "Use metric units."),
            ChatMessage("user", "Weather in Paris and Rome?"),
            ChatMessage(
                "assistant",
                "Checking both.",
                [
                    ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),
                    ToolCall("toolu_2", "get_weather", ""),
                ],
            ),
            ChatMessage("tool", '{"temp": 21}', tool_call_id="toolu_1"),
            ChatMessage("tool", "city not found", tool_call_id="toolu_2", is_error=True),
            ChatMessage("user", "And tomorrow?"),
        ],
        tools=[ToolSpec("get_weather", "Current weather", {"type": "object"}), ToolSpec("now")],
    )
    await collect(anthropic, request)
    body = fake.requests[0].body
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            # Tool results and the next user text share one user turn, results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp": 21}'},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "city not found",
                    "is_error": True,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": {"type": "object"},
        },
        {"name": "now", "input_schema": {"type": "object"}},
    ]


async def test_max_tokens_and_extra_body(fake: FakeUpstream) -> None:
    provider = AnthropicProvider(
        base_url=fake.url, api_key=KEY, max_tokens=1000, extra_body={"temperature": 0.5}
    )
    try:
        await collect(provider, ask())
    finally:
        await provider.aclose()
    body = fake.requests[0].body
    assert (body["max_tokens"], body["temperature"]) == (1000, 0.5)


@pytest.mark.parametrize("status", [429, 500, 503, 529])
async def test_rate_limits_and_server_errors_are_transient(
    fake: FakeUpstream, anthropic: AnthropicProvider, status: int
) -> None:
    fake.fail_next(1, status)
    with pytest.raises(ProviderError) as info:
        await collect(anthropic, ask())
    assert info.value.transient is True
    assert info.value.status == status
    assert text_of(await collect(anthropic, ask())) == fake.script.text


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_permanent_with_the_upstream_message(
    fake: FakeUpstream, anthropic: AnthropicProvider, status: int
) -> None:
    fake.fail_next(1, status, message="messages: roles must alternate")
    with pytest.raises(ProviderError) as info:
        await collect(anthropic, ask())
    assert info.value.transient is False
    assert info.value.status == status
    assert "messages: roles must alternate" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "transient", "status"),
    [
        ("overloaded_error", True, 529),
        ("api_error", True, 500),
        ("invalid_request_error", False, 400),
        ("brand_new_error", True, None),
    ],
)
async def test_error_event_inside_the_stream(
    fake: FakeUpstream,
    anthropic: AnthropicProvider,
    kind: str,
    transient: bool,
    status: int | None,
) -> None:
    fake.script = Script(text="partial", stream_error={"type": kind, "message": "Overloaded"})
    with pytest.raises(ProviderError) as info:
        await collect(anthropic, ask())
    assert info.value.transient is transient
    assert info.value.status == status
    assert kind in str(info.value)


async def test_key_never_leaks(
    fake: FakeUpstream, anthropic: AnthropicProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ProviderError] = []
    fake.fail_next(1, 401, message=f"invalid x-api-key: {KEY}")
    fake.fail_next(1, 529, message=f"overloaded for {KEY}")
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            await collect(anthropic, ask())
        errors.append(info.value)
    fake.script = Script(stream_error={"type": "api_error", "message": f"key {KEY} broke"})
    with pytest.raises(ProviderError) as info:
        await collect(anthropic, ask())
    errors.append(info.value)
    fake.script = Script()
    assert text_of(await collect(anthropic, ask())) == fake.script.text

    assert "invalid x-api-key: ***" in str(errors[0])
    for err in errors:
        assert KEY not in str(err)
        assert KEY not in repr(err)
    for text in (repr(anthropic), str(anthropic), repr(vars(anthropic))):
        assert KEY not in text
    assert caplog.records
    assert KEY not in caplog.text


async def test_read_timeout_is_transient(fake: FakeUpstream) -> None:
    fake.script = Script(text="one two", hang_after=3)
    provider = AnthropicProvider(base_url=fake.url, api_key=KEY, timeout=0.2)
    received: list[StreamItem] = []
    try:
        with pytest.raises(ProviderError) as info:
            async for item in provider.stream(ask()):
                received.append(item)
    finally:
        await provider.aclose()
    assert received == [TextDelta("one")]  # message_start, block start, ping, delta
    assert info.value.transient is True


async def test_truncated_stream_is_transient(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    fake.script = Script(text="cut short", truncate=True)
    with pytest.raises(ProviderError) as info:
        await collect(anthropic, ask())
    assert info.value.transient is True
    assert "ended before" in str(info.value)


async def test_cancel_closes_the_upstream_connection(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    fake.script = Script(text="never ending story", hang_after=3)
    first = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(anthropic.stream(ask())) as stream:
            async for _ in stream:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await fake.wait_disconnect()
    assert fake.disconnects == 1


async def test_refresh_models(fake: FakeUpstream, anthropic: AnthropicProvider) -> None:
    fake.models = ["claude-opus-4-1", "claude-haiku-4-5"]
    assert await anthropic.refresh_models() == ["claude-opus-4-1", "claude-haiku-4-5"]
    assert anthropic.models() == ["claude-opus-4-1", "claude-haiku-4-5"]
    req = fake.requests[-1]
    assert (req.method, req.path) == ("GET", "/v1/models")
    assert req.headers["x-api-key"] == KEY


async def test_thinking_signatures_and_redacted_thinking_become_items(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    """A thinking block's signature_delta ends it as a ReasoningSignature; a
    redacted_thinking block is one RedactedReasoning with its data."""
    fake.script = Script(reasoning="Think.", signature="sig-abc", redacted="ENCRYPTED==", text="ok")
    items = await collect(anthropic, ask())
    assert items[:4] == [
        ReasoningDelta("Think."),
        ReasoningSignature("sig-abc"),
        RedactedReasoning("ENCRYPTED=="),
        TextDelta("ok"),
    ]


async def test_a_native_body_is_sent_as_it_is_with_the_providers_model(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    """The Messages front's sanitised body goes upstream unchanged: thinking blocks
    with their signatures, cache_control, top_k; the model and stream are the provider's."""
    native = {
        "model": "anthropic/claude-sonnet-4-5",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "ENC"},
                    {"type": "text", "text": "Hello"},
                ],
            },
            {"role": "user", "content": "Again"},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
    }
    request = ModelRequest(MODEL, [ChatMessage("user", "ignored")], native=native)
    await collect(anthropic, request)
    assert fake.requests[0].body == {**native, "model": MODEL, "stream": True}


async def test_count_tokens_asks_the_upstream(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    fake.counted_tokens = 321
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    assert await anthropic.count_tokens(body) == 321
    (req,) = fake.requests
    assert (req.path, req.body, req.headers["x-api-key"]) == (
        "/v1/messages/count_tokens", body, KEY,
    )  # fmt: skip


async def test_count_tokens_failure_is_a_provider_error_without_the_key(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    fake.fail_next(1, 404, message=f"no such model ({KEY})")
    with pytest.raises(ProviderError) as caught:
        await anthropic.count_tokens({"model": MODEL, "messages": []})
    assert caught.value.status == 404
    assert KEY not in str(caught.value)


async def test_begin_writes_the_request_on_an_idle_pooled_connection(
    fake: FakeUpstream, anthropic: AnthropicProvider
) -> None:
    """The gateway's prefetch: the request is on the wire before its run exists."""
    fake.script = Script(text="Pooled.")
    await collect(anthropic, ask())  # leaves a connection idle in the pool
    stream, sent = anthropic.begin(ask("Again"))
    assert sent is not None  # written already: the stream reads its answer
    async with contextlib.aclosing(stream):
        assert text_of([item async for item in stream]) == "Pooled."
    assert sent.answered.result() == 200
    assert [r.body["messages"][0]["content"][0]["text"] for r in fake.requests] == ["Hi", "Again"]
