"""User-written agents: ``app = tether.App()`` and ``@app.agent("name")``.

An agent is an async function that receives an ``AgentContext``: the history of
the current branch, and ways to stream text and reasoning, call client-side
tools and wait for approvals. It never sees the transport.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from tether.agents.context import AgentContext

AgentFn = Callable[[AgentContext], Awaitable[None]]


class App:
    def __init__(self) -> None:
        self.agents: dict[str, AgentFn] = {}

    def agent(self, name: str) -> Callable[[AgentFn], AgentFn]:
        if not name or "/" in name:
            raise ValueError("an agent name is a non-empty word without '/'")

        def register(fn: AgentFn) -> AgentFn:
            if name in self.agents:
                raise ValueError(f"agent {name!r} is registered twice")
            self.agents[name] = fn
            return fn

        return register


def load_app(spec: str) -> App:
    """``module:attribute`` (as for ``tether serve module:app``) to an App."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected module:attribute, got {spec!r}")
    module = importlib.import_module(module_name)
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ValueError(f"{spec} is not a tether.App")
    return app
