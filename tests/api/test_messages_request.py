"""Parsing Messages API requests (tether.api.anthropic_api.request): pure, no HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tether.api.anthropic_api.request import parse_messages
from tether.api.openai.errors import OpenAIError


def body(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
        **fields,
    }


def refused(raw: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        parse_messages(raw)
    assert caught.value.status == 400
    return caught.value


def test_a_string_message_is_the_message_to_send() -> None:
    req = parse_messages(body(system="Be brief.", stream=True))
    c = req.completion
    assert c.send == [{"type": "text", "text": "Hi"}]
    assert (c.seed, c.system, c.title) == ([], "Be brief.", "Hi")
    assert c.spec.stream and req.stream
    assert c.spec.options == {"max_tokens": 100}


def test_max_tokens_and_model_are_required() -> None:
    assert (
        "max_tokens"
        in refused({"model": "m", "messages": [{"role": "user", "content": "x"}]}).body["message"]
    )
    assert (
        "model"
        in refused({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).body[
            "message"
        ]
    )
    refused(body(max_tokens=0))
    refused(body(max_tokens=True))
    refused(body(messages=[]))
    refused([1])


def test_system_blocks_are_joined_and_sampling_options_renamed() -> None:
    c = parse_messages(
        body(
            system=[
                {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "B"},
            ],
            temperature=0.2,
            top_p=0.9,
            top_k=3,
            stop_sequences=["END"],
        )
    ).completion
    assert c.system == "A\n\nB"
    assert c.spec.options == {"max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "stop": ["END"]}
    refused(body(system=[{"type": "image"}]))
    refused(body(temperature="hot"))
    refused(body(top_k=-1))
    refused(body(stop_sequences="END"))


def test_tools_and_tool_choice_in_openais_form() -> None:
    tools = [{"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object"}}]
    c = parse_messages(
        body(
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        )
    ).completion
    assert c.spec.tools == [
        {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object"}}
    ]
    assert c.spec.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert c.spec.options["parallel_tool_calls"] is False
    for kind, choice in (("auto", "auto"), ("any", "required"), ("none", "none")):
        assert (
            parse_messages(
                body(tools=tools, tool_choice={"type": kind})
            ).completion.spec.tool_choice
            == choice
        )
    refused(body(tools=tools, tool_choice={"type": "tool", "name": "other"}))
    refused(body(tool_choice={"type": "any"}))
    refused(body(tools=[{"name": "x"}]))  # no input_schema


def test_server_tools_are_refused_clearly() -> None:
    err = refused(body(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
    assert "server tools" in err.body["message"]


def test_a_tool_round_trip_seeds_the_call_with_its_result() -> None:
    """The tool_result blocks answer the tool_use blocks before them; a last user turn of
    only results leaves nothing to send: the run continues the conversation."""
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Look it up.", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no"}],
                    "is_error": True,
                },
            ],
        },
    ]
    c = parse_messages(body(messages=messages)).completion
    assert c.send is None
    assert c.seed == [
        {"role": "user", "text": "Weather?"},
        {
            "role": "assistant",
            "text": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                    "result": "21C",
                },
                {
                    "id": "toolu_2",
                    "name": "get_weather",
                    "arguments": {"city": "Rome"},
                    "error": "no",
                },
            ],
        },
    ]


def test_unanswered_or_unknown_tool_results_are_refused() -> None:
    call = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
    }
    assert (
        "t1"
        in refused(
            body(
                messages=[{"role": "user", "content": "x"}, call, {"role": "user", "content": "go"}]
            )
        ).body["message"]
    )
    result = {"type": "tool_result", "tool_use_id": "t9", "content": "x"}
    refused(body(messages=[{"role": "user", "content": [result]}]))


def test_images_and_documents_are_attachments_of_the_last_turn() -> None:
    png = "iVBORw0KGgo="
    c = parse_messages(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": png},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.png"},
                        },
                        {
                            "type": "document",
                            "title": "notes",
                            "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
                        },
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ]
        )
    ).completion
    assert c.send is not None
    kinds = [(p["type"], p.get("media_type"), p.get("url")) for p in c.send]
    assert kinds == [
        ("image", "image/png", None),
        ("image", None, "https://example.com/a.png"),
        ("file", "text/plain", None),
        ("text", None, None),
    ]
    refused(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "base64", "data": png}}],
                }
            ]
        )
    )
    refused(body(messages=[{"role": "user", "content": [{"type": "audio"}]}]))


def test_the_native_body_keeps_documented_fields_only() -> None:
    """What an Anthropic upstream would get: cache_control and thinking kept, unknown
    fields and anything credential-like dropped."""
    raw = body(
        system=[{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2000,
        metadata={"user_id": "u1"},
        stream=True,
        api_key="sk-client",
        extra_headers={"x-api-key": "sk-client"},
        service_tier="auto",
    )
    native = parse_messages(raw).native
    assert set(native) == {"model", "max_tokens", "messages", "system", "thinking", "metadata"}
    assert native["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_thinking_and_metadata_are_checked() -> None:
    refused(body(thinking={"type": "enabled", "budget_tokens": 100}))
    refused(body(thinking={"type": "enabled", "budget_tokens": 2048}))  # >= max_tokens
    refused(body(thinking={"type": "sometimes"}))
    refused(body(metadata={"user_id": 5}))
    refused(body(metadata={"secret": "x"}))
    parse_messages(body(thinking={"type": "disabled"}))
