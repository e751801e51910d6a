"""OpenAIResponsesProvider against the fake upstream's Responses wire, over real loopback HTTP."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.providers.base import (
    Attachment,
    ChatMessage,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallItem,
    ToolSpec,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    Usage,
)
from tether.providers.openai_responses import OpenAIResponsesProvider, ResponsesAssembler
from tether.providers.registry import ConfigError, ProviderRegistry

from .common import KEY, argument_deltas, collect, text_of
from .fake_upstreams import FakeToolCall, FakeUpstream, Script, pieces


def ask(text: str = "Hi", **options: object) -> ModelRequest:
    return ModelRequest("gpt-5", [ChatMessage("user", text)], run_id="run-1", options=options)


@pytest.fixture
async def responses(fake: FakeUpstream) -> AsyncIterator[OpenAIResponsesProvider]:
    provider = OpenAIResponsesProvider(
        base_url=fake.openai_base_url, api_key=KEY, models=["gpt-5"], timeout=5.0
    )
    yield provider
    await provider.aclose()


async def test_streams_reasoning_text_then_usage_with_its_details(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    fake.script = Script(
        text="Paris, of course.",
        reasoning="Recall geography.",
        usage=(1200, 300),
        cache=(1024, 0),
        reasoning_tokens=256,
    )
    items = await collect(responses, ask())
    assert items == [
        *(ReasoningDelta(p) for p in pieces("Recall geography.")),
        *(TextDelta(p) for p in pieces("Paris, of course.")),
        Usage(1200, 300, cache_read_tokens=1024, reasoning_tokens=256),
    ]
    (sent,) = fake.requests
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["accept"] == "text/event-stream"


async def test_sends_the_conversation_as_instructions_and_input_items(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    call = ToolCall("call_1", "lookup", '{"q": "x"}')
    request = ModelRequest(
        "gpt-5",
        [
            ChatMessage("system", "Be brief."),
            ChatMessage(
                "user",
                "What is this?",
                attachments=[Attachment("image", "image/png", data="iVBORw0K")],
            ),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "not found", tool_call_id="call_1", is_error=True),
            ChatMessage("assistant", "Nothing."),
            ChatMessage("user", "Again."),
        ],
        tools=[ToolSpec("lookup", "Look it up.", {"type": "object"})],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        options={
            "max_completion_tokens": 500,
            "reasoning_effort": "low",
            "temperature": 0.2,
            "stop": ["\n"],
            "seed": 7,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
        },
    )
    await collect(responses, request)
    body = fake.requests[0].body
    assert body == {
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0K",
                        "detail": "auto",
                    },
                    {"type": "input_text", "text": "What is this?"},
                ],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup",
                "arguments": '{"q": "x"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Error: not found"},
            {"type": "message", "role": "assistant", "content": "Nothing."},
            {"type": "message", "role": "user", "content": "Again."},
        ],
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "description": "Look it up.",
                "parameters": {"type": "object"},
            }
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "max_output_tokens": 500,
        "reasoning": {"effort": "low"},
        "temperature": 0.2,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "stream": True,
        "store": False,
    }


async def test_function_calls_stream_in_pieces_then_whole(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    args = '{"city": "Paris", "unit": "C"}'
    fake.script = Script(text="", tool_calls=[FakeToolCall("weather", args, id="call_w")])
    items = await collect(responses, ask())
    assert items[:-1] == [
        *argument_deltas("call_w", "weather", args, 5),
        ToolCallItem(ToolCall("call_w", "weather", args)),
    ]
    assert isinstance(items[-1], Usage)


async def test_a_failed_response_raises_the_classified_error_without_the_key(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    fake.script = Script(
        text="partial",
        stream_error={"code": "rate_limit_exceeded", "message": f"Slow down, {KEY}"},
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(responses, ask())
    assert caught.value.transient and caught.value.status == 429
    assert KEY not in str(caught.value) and "Slow down" in str(caught.value)


async def test_an_error_event_raises_the_classified_error() -> None:
    assembler = ResponsesAssembler("up", [])
    with pytest.raises(UpstreamInvalidRequest) as caught:
        assembler.feed_event(
            {"type": "error", "code": "context_length_exceeded", "message": "Too long."}
        )
    assert not caught.value.transient and "Too long." in str(caught.value)


async def test_an_http_error_is_the_upstreams_message_without_the_key(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    fake.fail_next(1, 401, message=f"Incorrect API key provided: {KEY}")
    with pytest.raises(ProviderError) as caught:
        await collect(responses, ask())
    assert caught.value.status == 401 and not caught.value.transient
    assert KEY not in str(caught.value)


async def test_an_incomplete_response_gives_the_text_so_far_and_logs_the_reason(
    fake: FakeUpstream, responses: OpenAIResponsesProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.providers")
    fake.script = Script(text="A long story", incomplete="max_output_tokens")
    items = await collect(responses, ask(max_tokens=3))
    assert text_of(items) == "A long story" and isinstance(items[-1], Usage)
    assert fake.requests[0].body["max_output_tokens"] == 3
    assert "incomplete (max_output_tokens)" in caplog.text


async def test_a_stream_cut_before_its_end_is_transient(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    fake.script = Script(text="cut here", truncate=True)
    with pytest.raises(ProviderError) as caught:
        await collect(responses, ask())
    assert caught.value.transient and "ended before" in str(caught.value)


async def test_a_whole_json_response_is_read_too(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    fake.script = Script(
        text="Whole.", reasoning="Think.", tool_calls=[FakeToolCall("f", "{}")], json_reply=True
    )
    items = await collect(responses, ask())
    assert items == [
        ReasoningDelta("Think."),
        TextDelta("Whole."),
        ToolCallItem(ToolCall("call_fake0", "f", "{}")),
        Usage(11, 7),
    ]


async def test_begin_writes_the_request_on_an_idle_pooled_connection(
    fake: FakeUpstream, responses: OpenAIResponsesProvider
) -> None:
    await collect(responses, ask())  # leaves a connection idle in the pool
    stream, sent = responses.begin(ask("Again"))
    assert sent is not None  # written already: the stream reads its answer
    async with contextlib.aclosing(stream):
        assert text_of([item async for item in stream]) == fake.script.text
    assert sent.answered.result() == 200
    assert [r.body["input"][0]["content"] for r in fake.requests] == ["Hi", "Again"]


async def test_the_environment_and_the_config_file_choose_the_responses_wire(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    env = {"TETHER_OPENAI_BASE_URL": fake.openai_base_url, "TETHER_OPENAI_API": "responses"}
    async with ProviderRegistry.from_env(env) as registry:
        provider, _ = registry.resolve("openai/gpt-5")
        assert isinstance(provider, OpenAIResponsesProvider)
        assert "image/png" in registry.media_types(provider)
    config = tmp_path / "tether.toml"
    config.write_text(
        f'[[upstreams]]\nname = "r"\nkind = "openai-responses"\n'
        f'base_url = "{fake.openai_base_url}"\nmodels = ["gpt-5"]\n'
    )
    async with ProviderRegistry.from_env({}, config) as registry:
        assert isinstance(registry.get("r"), OpenAIResponsesProvider)


def test_an_unknown_openai_api_is_refused() -> None:
    with pytest.raises(ConfigError, match="TETHER_OPENAI_API"):
        ProviderRegistry.from_env({"TETHER_OPENAI_API_KEY": KEY, "TETHER_OPENAI_API": "soap"})
