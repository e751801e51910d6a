"""``agent:<name>`` is a model wherever a model is: the gateway runs the server's agent.

A real ``tether serve gateway_agents:app`` child process; the official
``openai`` package is the client.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from helpers.server import TetherServer

APPS = Path(__file__).parent / "apps"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TetherServer]:
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH")) if p)
    async with TetherServer(
        tmp_path / "data", log_path=tmp_path / "server.log", env=env,
        extra_args=["gateway_agents:app"],
    ) as server:  # fmt: skip
        yield server


def client(server: TetherServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


async def test_a_chat_completion_can_be_answered_by_an_agent(server: TetherServer) -> None:
    c = client(server)
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "FIRST"},
        {"role": "user", "content": "make it loud"},
    ]
    whole = c.chat.completions.create(model="agent:shout", messages=history)
    chunks = list(c.chat.completions.create(model="agent:shout", messages=history, stream=True))

    assert whole.model == "agent:shout"
    assert whole.choices[0].message.content == "MAKE IT LOUD "
    assert whole.choices[0].finish_reason == "stop"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "MAKE IT LOUD "
    reasoning = [
        getattr(ch.choices[0].delta, "reasoning_content", None) for ch in chunks if ch.choices
    ]
    assert "Shouting it back." in reasoning


async def test_an_agent_is_listed_and_retrievable_as_a_model(server: TetherServer) -> None:
    c = client(server)
    assert "agent:shout" in [m.id for m in c.models.list()]
    assert c.models.retrieve("agent:shout").id == "agent:shout"
    assert c.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("agent:nobody")


async def test_an_unknown_agent_is_refused_with_the_agents_this_server_has(
    server: TetherServer,
) -> None:
    c = client(server)
    with pytest.raises(openai.NotFoundError) as refused:
        c.chat.completions.create(
            model="agent:nobody", messages=[{"role": "user", "content": "hi"}]
        )
    assert "agent:shout" in str(refused.value)
    assert refused.value.body["code"] == "model_not_found"  # type: ignore[index]
