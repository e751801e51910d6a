"""The built-in agent for a session bound to a model: stream it, run tools, retry.

Transient provider failures (timeouts, 429, 5xx) are retried with exponential
backoff; each retry is announced with a ``retry`` event that discards what the
failed attempt streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

from tether.agents.context_budget import fit_budget
from tether.providers.base import (
    ChatMessage,
    ModelRequest,
    Provider,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallItem,
    Usage,
)
from tether.runtime.context import RunContext
from tether.sessions import events as ev
from tether.sessions.fold import Message


@dataclass(slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.base_delay * 2 ** (attempt - 1), self.max_delay)


def to_chat(system: str | None, history: list[Message]) -> list[ChatMessage]:
    """The branch as provider messages: text parts, tool calls and their results."""
    out: list[ChatMessage] = []
    if system:
        out.append(ChatMessage("system", system))
    for msg in history:
        if msg.role == "user":
            out.append(ChatMessage("user", msg.text()))
            continue
        calls = [p for p in msg.parts if p.kind == ev.TOOL_CALL and p.tool_call_id]
        out.append(
            ChatMessage(
                "assistant",
                msg.text(),
                [
                    ToolCall(p.tool_call_id or "", p.tool_name or "", json.dumps(p.value))
                    for p in calls
                ],
            )
        )
        for p in calls:
            if p.result is not None or p.error is not None:
                content = p.error if p.error is not None else _as_text(p.result)
                out.append(
                    ChatMessage(
                        "tool", content, tool_call_id=p.tool_call_id, is_error=p.error is not None
                    )
                )
    return out


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class ModelAgent:
    def __init__(
        self,
        provider: Provider,
        model: str,
        retry: RetryPolicy | None = None,
        *,
        context_tokens: int | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.retry = retry or RetryPolicy()
        #: The model's context budget (tether.agents.context_budget); None: none.
        self.context_tokens = context_tokens

    async def __call__(self, ctx: RunContext) -> None:
        messages = to_chat(ctx.system, ctx.history)
        messages = await fit_budget(ctx, messages, self.context_tokens)
        while True:
            calls = await self._attempts(ctx, messages)
            if not calls:
                return
            messages.append(ChatMessage("assistant", "", calls))
            for call in calls:
                outcome = await ctx.tool_call(call.name, call.arguments, call_id=call.id)
                content = outcome.error if outcome.error is not None else _as_text(outcome.output)
                messages.append(
                    ChatMessage("tool", content, tool_call_id=call.id, is_error=not outcome.ok)
                )

    async def _attempts(self, ctx: RunContext, messages: list[ChatMessage]) -> list[ToolCall]:
        attempt = 1
        while True:
            ctx.new_attempt()
            calls: list[ToolCall] = []
            request = ModelRequest(self.model, messages, attempt=attempt, run_id=ctx.run_id)
            try:
                # aclosing: a cancel that lands while we await ctx must close the
                # upstream request now, not when the generator is collected.
                async with contextlib.aclosing(self.provider.stream(request)) as items:
                    async for item in items:
                        if isinstance(item, TextDelta):
                            await ctx.text(item.text)
                        elif isinstance(item, ReasoningDelta):
                            await ctx.reasoning(item.text)
                        elif isinstance(item, ToolCallItem):
                            calls.append(item.call)
                        elif isinstance(item, Usage):
                            await ctx.add_usage(**item.counts())
                return calls
            except ProviderError as err:
                if not err.transient or attempt >= self.retry.max_attempts:
                    raise
                delay = self.retry.delay(attempt)
                await ctx.retry(attempt, delay, str(err))
                await asyncio.sleep(delay)
                attempt += 1
