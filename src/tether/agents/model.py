"""The built-in agent for a session bound to a model: stream it, run tools, loop.

Each step streams one model response (retried on transient failures, see
:mod:`tether.agents.llm`) with the run's tools offered; when the model calls
tools, the step's calls are run at once (server tools here, client tools by
waiting for their results), their outcomes given back, and the next step
begins, until the model answers without a tool call or ``max_steps`` is reached.
"""

from __future__ import annotations

import json
from typing import Any

from tether.agents.attachments import chat_attachments
from tether.agents.context import AgentContext, AgentKit
from tether.agents.context_budget import fit_budget
from tether.providers.base import ChatMessage, ToolCall
from tether.runtime.context import RunContext
from tether.sessions import events as ev
from tether.sessions.fold import Message


def to_chat(system: str | None, history: list[Message]) -> list[ChatMessage]:
    """The branch as provider messages: text parts, tool calls and their results."""
    out: list[ChatMessage] = []
    if system:
        out.append(ChatMessage("system", system))
    for msg in history:
        if msg.role == "user":
            out.append(ChatMessage("user", msg.text, attachments=chat_attachments(msg)))
            continue
        calls = [p for p in msg.parts if p.kind == ev.TOOL_CALL and p.tool_call_id]
        out.append(
            ChatMessage(
                "assistant",
                msg.text,
                [
                    ToolCall(p.tool_call_id or "", p.tool_name or "", json.dumps(p.value))
                    for p in calls
                ],
            )
        )
        for p in calls:
            if p.answered:
                content = p.error if p.error is not None else _as_text(p.result)
                out.append(
                    ChatMessage(
                        "tool", content, tool_call_id=p.tool_call_id, is_error=p.error is not None
                    )
                )
    return out


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


#: Model calls one run may make before it stops (each after the tool calls of the last).
MAX_STEPS = 20


class StepLimitReached(RuntimeError):
    """The model kept calling tools for more steps than a run may take."""

    code = "max_steps"


class ModelAgent:
    """The agent of a session bound to a model: answer, run the tools it calls, loop."""

    def __init__(
        self, kit: AgentKit, *, max_steps: int = MAX_STEPS, context_tokens: int | None = None
    ) -> None:
        self.kit = kit
        self.max_steps = max_steps
        #: The model's context budget (tether.agents.context_budget); None: none.
        self.context_tokens = context_tokens

    def make_context(self, **fields: Any) -> AgentContext:
        return AgentContext(self.kit, **fields)

    async def __call__(self, ctx: RunContext) -> None:
        assert isinstance(ctx, AgentContext)
        model = ctx.model()
        messages = to_chat(ctx.system, ctx.history)
        messages = await fit_budget(ctx, messages, self.context_tokens)
        for _ in range(self.max_steps):
            reply = await model.respond(messages, tools=ctx.tools)
            if not reply.tool_calls:
                return
            messages.append(ChatMessage("assistant", reply.text, reply.tool_calls))
            outcomes = await ctx.run_tools(reply.tool_calls)
            for call, outcome in zip(reply.tool_calls, outcomes, strict=True):
                content = outcome.error if outcome.error is not None else _as_text(outcome.output)
                messages.append(
                    ChatMessage("tool", content, tool_call_id=call.id, is_error=not outcome.ok)
                )
        raise StepLimitReached(
            f"the model was still calling tools after {self.max_steps} steps (max_steps)"
        )
