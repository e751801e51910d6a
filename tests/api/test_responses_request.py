"""A Responses API body, parsed and checked: pure, no HTTP (tether.api.responses_api.request)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.api.openai.errors import OpenAIError
from tether.api.responses_api.request import parse_request, parse_response_id, response_id

PNG = "data:image/png;base64,iVBORw0KGgo="


def refused(body: Any) -> dict[str, Any]:
    with pytest.raises(OpenAIError) as caught:
        parse_request(body)
    assert caught.value.status == 400
    return caught.value.body


def test_a_string_input_is_the_user_message_to_send() -> None:
    req = parse_request({"model": "demo", "input": "Hello there\nsecond line"})
    c = req.completion
    assert c.send == [{"type": "text", "text": "Hello there\nsecond line"}]
    assert c.seed == [] and c.system is None and c.title == "Hello there"
    assert req.settings.store is True and c.results == []
    assert c.spec.stream is False and c.spec.tools == []


def test_instructions_and_system_or_developer_items_become_the_system_prompt() -> None:
    req = parse_request(
        {
            "model": "demo",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Speak French."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            ],
        }
    )
    assert req.completion.system == "Be brief.\n\nSpeak French."
    assert req.settings.instructions == "Be brief."


def test_a_conversation_of_items_is_seeded_and_its_last_user_message_sent() -> None:
    req = parse_request(
        {
            "model": "demo",
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather",
                 "arguments": '{"city":"Lyon"}'},
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2",
                 "output": [{"type": "input_text", "text": "noon"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "thanks"},
                                             {"type": "input_image", "image_url": PNG}]},
            ],
        }
    )  # fmt: skip
    c = req.completion
    assert c.seed == [
        {"role": "user", "text": "weather?"},
        {
            "role": "assistant",
            "text": "Let me look.",
            "tool_calls": [
                {"id": "c1", "name": "get_weather", "arguments": '{"city":"Lyon"}',
                 "result": "sunny"},
                {"id": "c2", "name": "get_time", "arguments": "{}", "result": "noon"},
            ],
        },
    ]  # fmt: skip
    assert c.send is not None and c.send[0] == {"type": "text", "text": "thanks"}
    assert c.send[1]["type"] == "image" and c.send[1]["media_type"] == "image/png"


def test_input_ending_with_tool_outputs_continues_without_a_new_message() -> None:
    req = parse_request(
        {
            "model": "demo",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "done"},
            ],
        }
    )
    assert req.completion.send is None
    assert req.completion.seed[-1]["tool_calls"][0]["result"] == "done"


def test_outputs_for_the_previous_responses_calls_are_results_to_write() -> None:
    prev = response_id("ses_" + "a" * 22, "run_" + "b" * 22)
    req = parse_request(
        {
            "model": "demo",
            "previous_response_id": prev,
            "input": [
                {"type": "function_call_output", "call_id": "c1", "output": "41"},
                {"type": "function_call_output", "call_id": "c2", "output": "42"},
            ],
        }
    )
    assert req.completion.results == [
        {"tool_call_id": "c1", "output": "41"},
        {"tool_call_id": "c2", "output": "42"},
    ]
    assert req.completion.seed == [] and req.completion.send is None
    assert req.settings.previous_response_id == prev


def test_options_map_to_the_upstreams_and_the_echoed_settings_are_kept() -> None:
    req = parse_request(
        {
            "model": "demo",
            "input": "hi",
            "stream": True,
            "store": False,
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                                "schema": {"type": "object"}}},
            "metadata": {"k": "v"},
            "tools": [{"type": "function", "name": "f", "description": "d",
                       "parameters": {"type": "object"}, "strict": False}],
            "tool_choice": {"type": "function", "name": "f"},
            "user": "ignored", "api_key": "dropped",
        }
    )  # fmt: skip
    spec = req.completion.spec
    assert spec.stream is True
    assert spec.options == {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 100,
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
    }
    assert spec.tools == [{"name": "f", "description": "d", "parameters": {"type": "object"}}]
    assert spec.tool_choice == {"type": "function", "function": {"name": "f"}}
    s = req.settings
    assert (s.store, s.max_output_tokens) == (False, 100)
    assert (s.metadata, s.strict) == ({"k": "v"}, {"f": False})
    assert s.reasoning == {"effort": "low", "summary": "auto"}
    assert s.text["format"]["type"] == "json_schema"
    assert type(s).from_extra(s.to_extra()) == s


def test_json_object_format_is_the_upstreams_json_object() -> None:
    req = parse_request({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})
    assert req.completion.spec.options["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "a b"}]},
         "tools[0].name"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"}},
         "tool_choice"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "store": 1}, "store"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
         "text.format.schema"),
        ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata"),
        ({"model": "m", "input": "x", "previous_response_id": "resp_nope"},
         "previous_response_id"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "input[0].content[0]"),
        ({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file_1"}]}]}, "input[0].content[0]"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c9",
                                   "output": "x"}]}, "input[0].call_id"),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c1", "name": "f"}]},
         "input"),
        ({"model": "m", "input": [
            {"type": "function_call", "call_id": "c1", "name": "f"},
            {"role": "user", "content": "next"}]}, "input"),
        ({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": PNG}]},
            {"role": "assistant", "content": "seen"},
            {"role": "user", "content": "again"}]}, "input"),
    ],
)  # fmt: skip
def test_bad_bodies_are_refused_naming_the_parameter(body: Any, param: str | None) -> None:
    assert refused(body)["param"] == param


def test_an_output_for_an_unknown_call_is_refused_even_when_continuing_after_a_message() -> None:
    prev = response_id("ses_" + "a" * 22, "run_" + "b" * 22)
    body = refused(
        {
            "model": "m",
            "previous_response_id": prev,
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "function_call_output", "call_id": "c1", "output": "x"},
            ],
        }
    )
    assert "No tool call found" in body["message"]


def test_a_response_id_names_its_session_and_run() -> None:
    sid, rid = "ses_0192a3b4c5d6e7f8a9b0c1", "run_0192a3b4c5d6ffeeddcc11"
    rid_ = response_id(sid, rid)
    assert rid_.startswith("resp_") and parse_response_id(rid_) == (sid, rid)
    assert parse_response_id("resp_" + "g" * 44) is None
    assert parse_response_id(rid_ + "0") is None
