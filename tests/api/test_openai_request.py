"""Parsing a Chat Completions request: pure, no HTTP (tether.api.openai.request)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.api.openai.errors import OpenAIError
from tether.api.openai.request import parse_completion


def refused(body: Any) -> dict[str, Any]:
    with pytest.raises(OpenAIError) as caught:
        parse_completion(body)
    assert caught.value.status == 400
    return caught.value.body


def test_a_conversation_seeds_its_earlier_turns_and_sends_the_last_user_message() -> None:
    req = parse_completion(
        {
            "model": "openai/gpt",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": "Again?\nmore"}]},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.5,
            "api_key": "sk-from-the-client",
            "base_url": "https://elsewhere.example",
        }
    )
    assert req.system == "Be brief.\n\nBe kind."
    assert req.seed == [
        {"role": "user", "text": "Hi"},
        {"role": "assistant", "text": "Hello!", "tool_calls": []},
    ]
    assert req.send == [{"type": "text", "text": "Again?\nmore"}]
    assert req.title == "Again?"
    assert req.spec.stream and req.spec.include_usage
    assert req.spec.options == {"temperature": 0.5}  # unknown fields are dropped


def test_a_request_ending_with_tool_results_continues_the_run() -> None:
    req = parse_completion(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather"}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        }
    )
    assert req.send is None
    assert req.seed[-1]["tool_calls"] == [
        {"id": "c1", "name": "weather", "arguments": "{}", "result": "sunny"}
    ]
    assert req.spec.tools == [
        {"name": "weather", "description": "", "parameters": {"type": "object", "properties": {}}}
    ]
    assert req.spec.tool_choice == {"type": "function", "function": {"name": "weather"}}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ([], None, None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "missing_required_parameter"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n",
         "unsupported_value"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream",
         "invalid_type"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
         "temperature", "invalid_type"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role",
         None),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "messages[0].content[0]", "unsupported_content"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content[0]", "invalid_content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"},
         "tool_choice", None),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}],
          "tools": [{"type": "function", "function": {"name": "bad name"}}]},
         "tools[0].function.name", None),
    ],
)  # fmt: skip
def test_a_bad_request_is_refused_naming_its_parameter(
    body: Any, param: str | None, code: str | None
) -> None:
    error = refused(body)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_tool_calls_without_their_results_are_refused() -> None:
    error = refused(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "user", "content": "y"},
            ],
        }
    )  # fmt: skip
    assert "c1" in error["message"]
    assert error["param"] == "messages.[1].role"
