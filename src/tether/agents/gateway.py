"""The agent behind the OpenAI-compatible gateway: one model response, then the run ends.

A gateway session answers one Chat Completions request. Its agent streams a
single model response with the request's tools, ``tool_choice`` and sampling
options. Tool calls the model makes are placed in the answer for the client to
run, and the run ends without waiting for them: like OpenAI's API the gateway
is stateless, and the client's next request carries the results.

The request's settings travel in the session record, ``metadata["gateway"]``
(:class:`GatewaySpec`), so the app's agent resolver can rebuild the agent.

Transient upstream failures are retried like :class:`~tether.agents.model.ModelAgent`
does, but only while the failed attempt has streamed nothing: chunks already
sent to an OpenAI client cannot be taken back. Upstream errors that are the
request's fault end the run with a classified error (:data:`ERROR_CODES`), so
the gateway can answer them with the status OpenAI would.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from tether.agents.model import RetryPolicy, to_chat
from tether.providers.base import (
    ModelRequest,
    Provider,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallItem,
    ToolSpec,
    Usage,
)
from tether.runtime.context import RunContext


class UpstreamInvalidRequest(ProviderError):
    """The upstream refused the request as invalid (HTTP 400, 413, 422)."""


class UpstreamNotFound(ProviderError):
    """The upstream answered 404 (typically: it has no such model)."""


class UpstreamRateLimited(ProviderError):
    """The upstream kept answering 429 after the retries."""


#: The ``code`` of a run's error event (the exception's class name) -> HTTP status.
ERROR_CODES = {
    UpstreamInvalidRequest.__name__: 400,
    UpstreamNotFound.__name__: 404,
    UpstreamRateLimited.__name__: 429,
    ProviderError.__name__: 502,
}


def _classified(err: ProviderError) -> ProviderError:
    cls: type[ProviderError] | None = {
        400: UpstreamInvalidRequest,
        404: UpstreamNotFound,
        413: UpstreamInvalidRequest,
        422: UpstreamInvalidRequest,
        429: UpstreamRateLimited,
    }.get(err.status or 0)
    if cls is None:
        return err
    return cls(str(err), transient=err.transient, status=err.status)


@dataclass(slots=True)
class GatewaySpec:
    """What a Chat Completions request asked for, beyond its messages."""

    #: The model as the client named it (echoed in responses).
    model: str
    #: Tool definitions: ``{"name", "description", "parameters"}``.
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    #: Whitelisted sampling options (providers.base.SAMPLING_OPTIONS).
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    #: ``stream_options.include_usage``: end the stream with a usage chunk.
    include_usage: bool = False

    def to_metadata(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "options": self.options,
            "stream": self.stream,
            "include_usage": self.include_usage,
        }

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> GatewaySpec:
        return cls(
            model=str(data.get("model") or ""),
            tools=list(data.get("tools") or []),
            tool_choice=data.get("tool_choice"),
            options=dict(data.get("options") or {}),
            stream=bool(data.get("stream")),
            include_usage=bool(data.get("include_usage")),
        )


class GatewayAgent:
    def __init__(
        self,
        provider: Provider,
        model: str,
        spec: GatewaySpec,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.spec = spec
        self.retry = retry or RetryPolicy()

    async def __call__(self, ctx: RunContext) -> None:
        request = ModelRequest(
            self.model,
            to_chat(ctx.system, ctx.history),
            tools=[
                ToolSpec(
                    t["name"], t.get("description") or "", t.get("parameters") or {"type": "object"}
                )
                for t in self.spec.tools
            ],
            run_id=ctx.run_id,
            tool_choice=self.spec.tool_choice,
            options=dict(self.spec.options),
        )
        for call in await self._attempts(ctx, request):
            await offer_tool_call(ctx, call)

    async def _attempts(self, ctx: RunContext, request: ModelRequest) -> list[ToolCall]:
        attempt = 1
        while True:
            ctx.new_attempt()
            request.attempt = attempt
            calls: list[ToolCall] = []
            try:
                async with contextlib.aclosing(self.provider.stream(request)) as items:
                    async for item in items:
                        if isinstance(item, TextDelta):
                            await ctx.text(item.text)
                        elif isinstance(item, ReasoningDelta):
                            await ctx.reasoning(item.text)
                        elif isinstance(item, ToolCallItem):
                            calls.append(item.call)
                        elif isinstance(item, Usage):
                            await ctx.add_usage(
                                input_tokens=item.input_tokens, output_tokens=item.output_tokens
                            )
                return calls
            except ProviderError as err:
                if not err.transient or attempt >= self.retry.max_attempts or ctx.attempt_parts:
                    raise _classified(err) from None
                delay = self.retry.delay(attempt)
                await ctx.retry(attempt, delay, str(err))
                await asyncio.sleep(delay)
                attempt += 1


async def offer_tool_call(ctx: RunContext, call: ToolCall) -> None:
    """Place a tool call in the answer for the client to run; the run does not wait."""
    await ctx.place_tool_call(call.name, call.arguments or "{}", call_id=call.id)
