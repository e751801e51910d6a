"""``@app.agent`` refuses, at registration, an agent that could only fail at run time."""

from __future__ import annotations

import functools

import pytest

import tether
from tether.agents.context import AgentContext


def test_a_plain_def_agent_is_refused_with_the_fix() -> None:
    app = tether.App()
    with pytest.raises(TypeError, match=r"agent 'echo': 'echo' is a plain function.*async def"):

        @app.agent("echo")
        def echo(ctx: AgentContext) -> None:  # type: ignore[type-var]
            pass

    assert app.agents == {}

    class Agent:
        async def __call__(self, ctx: AgentContext) -> None:
            pass

    async def with_option(ctx: AgentContext, option: int) -> None:
        pass

    app.agent("object")(Agent())  # what is awaited when called is an agent
    app.agent("partial")(functools.partial(with_option, option=1))
    assert sorted(app.agents) == ["object", "partial"]


def test_an_agent_without_a_name_says_how_to_write_one() -> None:
    app = tether.App()
    with pytest.raises(TypeError, match=r'write @app.agent\("name"\)'):

        @app.agent  # type: ignore[arg-type]
        async def echo(ctx: AgentContext) -> None:
            pass
