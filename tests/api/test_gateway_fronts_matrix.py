"""Every front against every upstream wire: each translation path, end to end.

One real ``tether serve`` holds three upstreams on one fake server: an
OpenAI chat-completions wire (``openai/``), an Anthropic Messages wire
(``anthropic/``) and an OpenAI Responses wire (``resp/``, kind
``openai-responses`` in a config file). Each front is driven by its official
client (``openai`` for Chat Completions and Responses, ``anthropic`` for
Messages): a streamed answer with reasoning, and a tool call whose result goes
back upstream in the upstream's own format on the follow-up request.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio

from helpers.server import TetherServer
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEYS = {"openai": "sk-chat-7f1d2c", "anthropic": "sk-ant-3b9e0a", "resp": "sk-resp-5c8a4e"}
#: The model each upstream wire is reached by, and the path the fake sees.
UPSTREAMS = {
    "chat-wire": ("openai/gpt-4o-mini", "/v1/chat/completions"),
    "anthropic-wire": ("anthropic/claude-sonnet-4-5", "/v1/messages"),
    "responses-wire": ("resp/gpt-4o", "/v1/responses"),
}
KEY_OF = {"chat-wire": "openai", "anthropic-wire": "anthropic", "responses-wire": "resp"}
EACH_UPSTREAM = pytest.mark.parametrize("upstream", list(UPSTREAMS))
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    base = tmp_path_factory.mktemp("matrix")
    async with FakeUpstream() as fake:
        config = base / "tether.toml"
        config.write_text(
            "[[upstreams]]\n"
            'name = "resp"\n'
            'kind = "openai-responses"\n'
            f'base_url = "{fake.openai_base_url}"\n'
            f'api_key = "{KEYS["resp"]}"\n'
            'models = ["gpt-4o"]\n'
        )
        env = {
            **os.environ,
            "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
            "TETHER_OPENAI_API_KEY": KEYS["openai"],
            "TETHER_OPENAI_MODELS": "gpt-4o-mini",
            "TETHER_ANTHROPIC_BASE_URL": fake.url,
            "TETHER_ANTHROPIC_API_KEY": KEYS["anthropic"],
            "TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5",
            "TETHER_CONFIG": str(config),
        }
        async with TetherServer(
            base / "data", log_path=base / "server.log", env=env,
            extra_args=["--log-level", "debug"],
        ) as server:  # fmt: skip
            yield fake, server


@pytest.fixture
def fake(stack: tuple[FakeUpstream, TetherServer]) -> FakeUpstream:
    upstream = stack[0]
    upstream.script = Script()
    upstream.replies.clear()
    upstream.requests.clear()
    return upstream


@pytest_asyncio.fixture(loop_scope="module")
async def oai(stack: tuple[FakeUpstream, TetherServer]) -> AsyncIterator[openai.AsyncOpenAI]:
    base = f"{stack[1].base_url}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="t", max_retries=0, timeout=30) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def claude(
    stack: tuple[FakeUpstream, TetherServer],
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=stack[1].base_url, api_key="t", max_retries=0, timeout=30
    ) as c:
        yield c


def upstream_bodies(fake: FakeUpstream, upstream: str) -> list[dict[str, Any]]:
    """What the fake received on the upstream's wire (and nothing on the others)."""
    path = UPSTREAMS[upstream][1]
    assert {r.path for r in fake.requests} == {path}, [r.path for r in fake.requests]
    return [r.body for r in fake.requests]


def weather_call() -> list[Script]:
    """A model that calls get_weather, then answers from its result."""
    call = FakeToolCall("get_weather", '{"city": "Oslo"}', id="call_matrix_1")
    return [Script(text="", tool_calls=[call]), Script(text="Oslo is mild today.")]


# -- streamed text with reasoning ----------------------------------------------------------


@EACH_UPSTREAM
async def test_chat_completions_streams_from_every_upstream(
    oai: openai.AsyncOpenAI, fake: FakeUpstream, upstream: str
) -> None:
    fake.script = Script(text="Bright and clear.", reasoning="Think of the sky.")
    stream = await oai.chat.completions.create(
        model=UPSTREAMS[upstream][0],
        messages=[{"role": "user", "content": "Sky?"}],
        stream=True,
    )
    text, reasoning = [], []
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            reasoning.append(getattr(chunk.choices[0].delta, "reasoning_content", None) or "")
    assert "".join(text) == "Bright and clear."
    assert "".join(reasoning) == "Think of the sky."
    assert "Sky?" in json.dumps(upstream_bodies(fake, upstream))


@EACH_UPSTREAM
async def test_responses_streams_from_every_upstream(
    oai: openai.AsyncOpenAI, fake: FakeUpstream, upstream: str
) -> None:
    fake.script = Script(text="Bright and clear.", reasoning="Think of the sky.")
    stream = await oai.responses.create(model=UPSTREAMS[upstream][0], input="Sky?", stream=True)
    kinds, text, reasoning = [], [], []
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        elif event.type == "response.reasoning_summary_text.delta":
            reasoning.append(event.delta)
    assert "".join(text) == "Bright and clear."
    assert "".join(reasoning) == "Think of the sky."
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "Sky?" in json.dumps(upstream_bodies(fake, upstream))


@EACH_UPSTREAM
async def test_messages_streams_from_every_upstream(
    claude: anthropic.AsyncAnthropic, fake: FakeUpstream, upstream: str
) -> None:
    fake.script = Script(text="Bright and clear.", reasoning="Think of the sky.")
    async with claude.messages.stream(
        model=UPSTREAMS[upstream][0],
        max_tokens=512,
        messages=[{"role": "user", "content": "Sky?"}],
    ) as stream:
        message = await stream.get_final_message()
    blocks = {b.type: b for b in message.content}
    assert blocks["text"].text == "Bright and clear."  # type: ignore[union-attr]
    assert blocks["thinking"].thinking == "Think of the sky."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert "Sky?" in json.dumps(upstream_bodies(fake, upstream))


# -- a tool call, its result sent back on the next request ---------------------------------


@EACH_UPSTREAM
async def test_chat_completions_tool_round_trip_through_every_upstream(
    oai: openai.AsyncOpenAI, fake: FakeUpstream, upstream: str
) -> None:
    fake.replies.extend(weather_call())
    model = UPSTREAMS[upstream][0]
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    asked: Any = [{"role": "user", "content": "Weather in Oslo?"}]
    first = await oai.chat.completions.create(model=model, messages=asked, tools=tools)
    (call,) = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather", {"city": "Oslo"},
    )  # fmt: skip
    history = [
        *asked,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 9}'},
    ]
    second = await oai.chat.completions.create(model=model, messages=history, tools=tools)
    assert second.choices[0].message.content == "Oslo is mild today."
    follow_up = json.dumps(upstream_bodies(fake, upstream)[-1])
    assert "call_matrix_1" in follow_up and "temp_c" in follow_up


@EACH_UPSTREAM
async def test_responses_tool_round_trip_through_every_upstream(
    oai: openai.AsyncOpenAI, fake: FakeUpstream, upstream: str
) -> None:
    fake.replies.extend(weather_call())
    model = UPSTREAMS[upstream][0]
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
    first = await oai.responses.create(model=model, input="Weather in Oslo?", tools=tools)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    second = await oai.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 9}'}
        ],
        tools=tools,
    )
    assert second.output_text == "Oslo is mild today."
    follow_up = json.dumps(upstream_bodies(fake, upstream)[-1])
    assert "call_matrix_1" in follow_up and "temp_c" in follow_up


@EACH_UPSTREAM
async def test_messages_tool_round_trip_through_every_upstream(
    claude: anthropic.AsyncAnthropic, fake: FakeUpstream, upstream: str
) -> None:
    fake.replies.extend(weather_call())
    model = UPSTREAMS[upstream][0]
    tools: Any = [{"name": "get_weather", "description": "The weather.", "input_schema": SCHEMA}]
    asked: Any = [{"role": "user", "content": "Weather in Oslo?"}]
    first = await claude.messages.create(model=model, max_tokens=512, messages=asked, tools=tools)
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use"
    assert (use.name, use.input) == ("get_weather", {"city": "Oslo"})
    result = {"type": "tool_result", "tool_use_id": use.id, "content": '{"temp_c": 9}'}
    history = [
        *asked,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [result]},
    ]
    second = await claude.messages.create(
        model=model, max_tokens=512, messages=history, tools=tools
    )
    assert [b.text for b in second.content if b.type == "text"] == ["Oslo is mild today."]
    follow_up = json.dumps(upstream_bodies(fake, upstream)[-1])
    assert "call_matrix_1" in follow_up and "temp_c" in follow_up


@EACH_UPSTREAM
async def test_no_upstream_key_reaches_a_client_or_the_log(
    stack: tuple[FakeUpstream, TetherServer],
    oai: openai.AsyncOpenAI,
    fake: FakeUpstream,
    upstream: str,
) -> None:
    model = UPSTREAMS[upstream][0]
    answer = await oai.responses.with_raw_response.create(model=model, input="Hi")
    seen = [answer.text, json.dumps(dict(answer.headers))]
    headers = fake.requests[-1].headers
    sent = headers.get("authorization") or headers.get("x-api-key") or ""
    assert KEYS[KEY_OF[upstream]] in sent  # the upstream got its key ...
    log = stack[1].output()
    for key in KEYS.values():  # ... and no client, nor the log, any
        assert all(key not in text for text in seen)
        assert key not in log
