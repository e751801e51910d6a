"""What an agent gets: a RunContext plus the server's models and the run's tools.

``ctx.model()`` is the session's model, ``ctx.model("anthropic/claude-...")``
any model the server serves, both called with the server's keys;
``ctx.tools`` are the tools declared for the run, and ``ctx.run_tools(calls)``
runs what a model asked for: the server's tools here, the clients' by waiting
for a ``/tool-results`` answer, all of one step at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.agents.llm import RetryPolicy, ServerModel
from tether.agents.tools import ServerTool, ToolRegistry, Toolset
from tether.observability import tracing
from tether.providers.base import Provider, ToolCall
from tether.runtime.context import RunContext, ToolOutcome, refusal, value_of

log = logging.getLogger(__name__)

#: ``"openai/gpt-4o-mini"`` -> (its provider, the model's name there); raises
#: LookupError for a model the server does not serve.
ModelResolver = Callable[[str], tuple[Provider, str]]


@dataclass(slots=True, frozen=True)
class AgentKit:
    """What the server gives every agent: its models, its tools, its retry policy."""

    resolve_model: ModelResolver
    tools: ToolRegistry
    retry: RetryPolicy


class AgentContext(RunContext):
    """A RunContext with the server's models and the run's tools (see the module)."""

    def __init__(self, kit: AgentKit, *, default_tools: Sequence[str] = (), **fields: Any) -> None:
        super().__init__(**fields)
        self.kit = kit
        #: The tools of this run: the agent's defaults, the session's, then its message's.
        self.tools: Toolset = kit.tools.resolve(default_tools, self.declared_tools)

    def model(self, name: str | None = None) -> ServerModel:
        """The server's model ``name`` (default: the session's), for this run."""
        full = name or self.model_name or "demo"
        provider, model = self.kit.resolve_model(full)
        return ServerModel(self, provider, model, self.kit.retry, needs_approval=self.tools)

    async def run_tools(self, calls: list[ToolCall]) -> list[ToolOutcome]:
        """Run a step's tool calls at once; their outcomes, in the calls' order.

        A server tool runs here (after its approval, if it asks one) and its
        outcome is recorded as a tool result; a client's tool is waited for.
        """
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._run_one(call)) for call in calls]
        return [t.result() for t in tasks]

    async def _run_one(self, call: ToolCall) -> ToolOutcome:
        tool = self.tools.server_tool(call.name)
        if tool is None:
            return await self.wait_result(call.id)
        recorded = self.recorded_outcome(call.id)
        if recorded is not None:  # it ran before this run was continued
            return recorded
        outcome = await self._run_server_tool(tool, call)
        await self.tool_result(call.id, outcome)
        return outcome

    async def _run_server_tool(self, tool: ServerTool, call: ToolCall) -> ToolOutcome:
        if tool.approval:
            verdict = await self.wait_approval(call.id)
            if not verdict.approved:
                return ToolOutcome(error=refusal(verdict))
        arguments = value_of(call.arguments or "{}")
        if not isinstance(arguments, dict):
            return ToolOutcome(error="the arguments are not a JSON object")
        self.begin_step()
        try:
            with tracing.tool_call(call.name, call.id, tracing.SERVER_TOOL, arguments) as traced:
                output = await tool(arguments)
                traced.result(output)
            return ToolOutcome(output=output)
        except Exception as err:  # the model is told, and may try again
            log.info("tool %s failed in run %s: %s", call.name, self.run_id, err)
            return ToolOutcome(error=f"{type(err).__name__}: {err}")
        finally:
            self.end_step()


class CustomAgent:
    """A user's ``@app.agent`` function, given an AgentContext."""

    def __init__(
        self,
        fn: Callable[[AgentContext], Awaitable[None]],
        kit: AgentKit,
        tools: Sequence[str] = (),
        *,
        replay: bool = True,
    ) -> None:
        self.fn = fn
        self.kit = kit
        #: The agent's default tools (``@app.agent(..., tools=[...])``).
        self.tools = tuple(tools)
        #: A run of it that went away continues from its journal (False: it ends interrupted).
        self.replay = replay

    def make_context(self, **fields: Any) -> AgentContext:
        # An MCP server's tools are known once it has answered: until then they are left out.
        defaults = [name for name in self.tools if name in self.kit.tools.server]
        return AgentContext(self.kit, default_tools=defaults, **fields)

    async def __call__(self, ctx: RunContext) -> None:
        assert isinstance(ctx, AgentContext)
        await self.fn(ctx)
