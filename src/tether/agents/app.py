"""User-written agents and tools: ``app = tether.App()``, ``@app.agent``, ``@app.tool``.

An agent is an async function that receives an ``AgentContext``: the history of
the current branch, and ways to stream text and reasoning, call the server's
models and tools, and wait for client tools and approvals. It never sees the
transport. A tool is a Python function the server runs when a model calls it
(see :mod:`tether.agents.server_tools`); ``@app.agent("name", tools=[...])``
makes tools (the app's, or MCP servers' ``server.tool``) that agent's defaults.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import overload

from tether.agents.context import AgentContext
from tether.agents.server_tools import FunctionTool, ToolFn

AgentFn = Callable[[AgentContext], Awaitable[None]]


class App:
    def __init__(self) -> None:
        self.agents: dict[str, AgentFn] = {}
        #: Each agent's default tools, by name (offered before a session's own).
        self.agent_tools: dict[str, list[str]] = {}
        #: Agents that are not replay-safe (``replay=False``): a lost run of theirs ends.
        self.no_replay: set[str] = set()
        self.tools: list[FunctionTool] = []

    def agent(
        self, name: str, *, tools: Sequence[str] = (), replay: bool = True
    ) -> Callable[[AgentFn], AgentFn]:
        """Register an async agent function under ``name``.

        ``tools``: its default tools. ``replay=False`` for an agent that does
        not keep the journal's rule (side effects through ``ctx``, deterministic
        between them): a run of it whose process went away ends
        ``interrupted`` instead of continuing from its journal.
        """
        if callable(name):
            raise TypeError('an agent needs a name: write @app.agent("name") (with parentheses)')
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError("an agent name is a non-empty word without '/'")
        if isinstance(tools, str) or not all(isinstance(t, str) and t for t in tools):
            raise ValueError("an agent's tools are a list of tool names")

        def register(fn: AgentFn) -> AgentFn:
            if not _is_async(fn):
                raise TypeError(
                    f"agent {name!r}: {getattr(fn, '__name__', fn)!r} is a plain function; "
                    "define it with `async def` (an agent awaits what it asks of ctx)"
                )
            if name in self.agents:
                raise ValueError(f"agent {name!r} is registered twice")
            self.agents[name] = fn
            self.agent_tools[name] = list(tools)
            if not replay:
                self.no_replay.add(name)
            return fn

        return register

    def check_tools(self, mcp_servers: Collection[str] = ()) -> None:
        """ValueError for an agent's default tool that is neither the app's nor an MCP server's."""
        own = {t.spec.name for t in self.tools}
        for agent, names in self.agent_tools.items():
            for name in names:
                if name not in own and name.partition(".")[0] not in mcp_servers:
                    raise ValueError(f"agent {agent!r}: no tool {name!r} (app or MCP server)")

    @overload
    def tool(self, fn: ToolFn, /) -> ToolFn: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        approval: bool = False,
    ) -> Callable[[ToolFn], ToolFn]: ...

    def tool(
        self,
        fn: ToolFn | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        approval: bool = False,
    ) -> ToolFn | Callable[[ToolFn], ToolFn]:
        """Register a function as a server tool: ``@app.tool`` or ``@app.tool(approval=True)``."""

        def register(fn: ToolFn) -> ToolFn:
            tool = FunctionTool(fn, name=name, description=description, approval=approval)
            if any(t.spec.name == tool.spec.name for t in self.tools):
                raise ValueError(f"tool {tool.spec.name!r} is registered twice")
            self.tools.append(tool)
            return fn

        return register(fn) if fn is not None else register


def _is_async(fn: object) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (a plain
    ``def`` would only fail when its first run awaits what it returns)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself, not callable()
    )


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
