"""A request's tools, tool_choice and sampling options, in each upstream's format."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.providers.anthropic import (
    AnthropicProvider,
    to_anthropic_options,
    to_anthropic_tool_choice,
)
from tether.providers.base import ChatMessage, ModelRequest, ToolSpec
from tether.providers.openai import OpenAIProvider

from .common import KEY

TOOLS = [ToolSpec("lookup", "Look up.", {"type": "object"})]


def ask(**kwargs) -> ModelRequest:  # type: ignore[no-untyped-def]
    return ModelRequest("m", [ChatMessage("user", "hi")], **kwargs)


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        base_url="http://127.0.0.1:9/v1",
        api_key=KEY,
        extra_body={"temperature": 1.0, "max_tokens": 10, "user": "server-default"},
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(base_url="http://127.0.0.1:9", api_key=KEY)
    yield provider
    await provider.aclose()


async def test_openai_sends_whitelisted_options_over_extra_body(openai: OpenAIProvider) -> None:
    body = openai.build_body(
        ask(
            tools=TOOLS,
            tool_choice="required",
            options={
                "temperature": 0.2,
                "seed": 7,
                "parallel_tool_calls": False,
                "api_key": "sk-evil",
                "model": "other",
                "stream": False,
                "messages": [],
            },
        )
    )
    assert body["temperature"] == 0.2 and body["seed"] == 7 and body["max_tokens"] == 10
    assert body["parallel_tool_calls"] is False and body["tool_choice"] == "required"
    assert body["model"] == "m" and body["stream"] is True and len(body["messages"]) == 1
    assert "api_key" not in body


async def test_openai_drops_tool_settings_without_tools(openai: OpenAIProvider) -> None:
    body = openai.build_body(
        ask(tool_choice="auto", options={"parallel_tool_calls": True, "top_p": 0.5})
    )
    assert "tool_choice" not in body and "parallel_tool_calls" not in body
    assert "tools" not in body and body["top_p"] == 0.5


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "lookup"}},
            False,
            {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("bogus", None, None),
    ],
)
def test_anthropic_tool_choice(choice, parallel, expected) -> None:  # type: ignore[no-untyped-def]
    assert to_anthropic_tool_choice(choice, parallel) == expected


def test_anthropic_options() -> None:
    assert to_anthropic_options(
        {"temperature": 0.1, "top_p": 0.9, "max_tokens": 5, "stop": "X", "seed": 1}
    ) == {"temperature": 0.1, "top_p": 0.9, "max_tokens": 5, "stop_sequences": ["X"]}
    assert to_anthropic_options({"max_tokens": 5, "max_completion_tokens": 9, "stop": ["a"]}) == {
        "max_tokens": 9,
        "stop_sequences": ["a"],
    }
    assert to_anthropic_options({"frequency_penalty": 1, "response_format": {}}) == {}


async def test_anthropic_body(anthropic: AnthropicProvider) -> None:
    body = anthropic.build_body(ask(options={"api_key": "sk-evil", "seed": 3}))
    assert body["max_tokens"] == 4096 and "seed" not in body and "api_key" not in body
    assert "tool_choice" not in body
    body = anthropic.build_body(
        ask(tools=TOOLS, tool_choice="required", options={"max_completion_tokens": 99})
    )
    assert body["max_tokens"] == 99 and body["tool_choice"] == {"type": "any"}
