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
request's fault end the run with a classified error (the provider errors of
:mod:`tether.providers.base`, each with its wire code), so the gateway can
answer them with the status OpenAI would.

Pipelining: the gateway can start the upstream request before the session
exists (:class:`Prefetch`, for a :class:`~tether.providers.base.PrefetchingProvider`),
so that setting the session up overlaps the upstream's time to first token.
The app's :class:`Prefetches` holds it until the run's first attempt takes that
response over, if it is for exactly the request the run would have sent;
nothing reaches a client except through the session's log, as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from tether.agents.llm import RetryPolicy
from tether.agents.model import to_chat
from tether.observability import tracing
from tether.providers.base import (
    ChatMessage,
    ItemStream,
    ModelRequest,
    PrefetchingProvider,
    Provider,
    ProviderError,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallItem,
    ToolSpec,
    Usage,
    classified,
)
from tether.runtime.context import RunContext

log = logging.getLogger(__name__)

#: Seconds a prefetched upstream response waits for its run before it is dropped.
PREFETCH_TTL = 30.0


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
    #: The front that took the request: "chat", "responses" or "messages".
    front: str = "chat"
    #: Front-specific settings its translator needs on every read of the answer.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The request in its upstream's own format, when the front speaks it (sent
    #: as it is, sanitised, by a provider of that format; others translate).
    native: dict[str, Any] | None = None

    def to_metadata(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "options": self.options,
            "stream": self.stream,
            "include_usage": self.include_usage,
            "front": self.front,
            "extra": self.extra,
            "native": self.native,
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
            front=str(data.get("front") or "chat"),
            extra=dict(data.get("extra") or {}),
            native=data.get("native"),
        )


def model_request(model: str, messages: list[ChatMessage], spec: GatewaySpec) -> ModelRequest:
    """The upstream request of a gateway run (also what a prefetch must match)."""
    return ModelRequest(
        model,
        messages,
        tools=[
            ToolSpec(
                t["name"], t.get("description") or "", t.get("parameters") or {"type": "object"}
            )
            for t in spec.tools
        ],
        tool_choice=spec.tool_choice,
        options=dict(spec.options),
        native=spec.native,
    )


def _same_request(a: ModelRequest, b: ModelRequest) -> bool:
    """Whether the upstream would get the same request (run ids and attempts aside)."""
    return (
        a.model == b.model
        and a.messages == b.messages
        and a.tools == b.tools
        and a.tool_choice == b.tool_choice
        and a.options == b.options
        and a.native == b.native
    )


class Prefetch:
    """An upstream response started before its run exists (the gateway's pipelining).

    A task runs the provider's stream up to its first item (the upstream's
    time to first token), while the gateway creates the session and starts the
    run. The run's agent then :meth:`take`\\ s it and goes on iterating the same
    stream itself: no task or queue sits between it and the upstream per item.
    Only for providers whose request does not depend on the run (not ``demo``,
    whose answer is seeded by the run id). A prefetch nobody takes is dropped
    (the upstream request aborted) after :data:`PREFETCH_TTL` seconds or by
    :meth:`discard`.
    """

    def __init__(
        self, provider: PrefetchingProvider, request: ModelRequest, ttl: float = PREFETCH_TTL
    ) -> None:
        self.request = request
        # Written right now on a pooled connection, if one is idle: no task,
        # and the run reads the response itself.
        self._stream, self._sent = provider.begin(request)
        self._first: asyncio.Future[StreamItem] | None = None
        if self._sent is None:
            self._first = asyncio.ensure_future(self._stream.__anext__())
            # An outcome nobody reads (a dropped prefetch's error) is not an error.
            self._first.add_done_callback(_consume)
        self._taken = False
        self._timer = asyncio.get_running_loop().call_later(ttl, self.discard)

    @property
    def written(self) -> bool:
        """The upstream request is already on the wire (not left to a task to send)."""
        return self._sent is not None

    @property
    def answered(self) -> asyncio.Future[int] | None:
        """The upstream's status once the run has read its answer's head (0: it never will).

        None unless :attr:`written`.
        """
        return None if self._sent is None else self._sent.answered

    def take(self, request: ModelRequest) -> ItemStream | None:
        """The response, if it is for ``request`` and still there; else None (and dropped)."""
        if self._taken:
            return None
        self._taken = True
        self._timer.cancel()
        if not _same_request(self.request, request):
            log.warning("a prefetched upstream request differs from its run's; sending it again")
            self._drop()
            return None
        # A written request's stream is the provider's own: its first step reads
        # the answer and takes the connection over (no wrapper per item).
        return self._items() if self._first is not None else self._stream

    def discard(self) -> None:
        """Abort the upstream request unless a run took the response."""
        if not self._taken:
            self._taken = True
            self._timer.cancel()
            self._drop()

    def _drop(self) -> None:
        if self._sent is not None:
            self._sent.abort()  # the stream never started: nothing else is open
            return
        task = asyncio.ensure_future(self._close())
        _DROPPING.add(task)
        task.add_done_callback(_DROPPING.discard)

    async def _close(self) -> None:
        assert self._first is not None
        self._first.cancel()
        await asyncio.wait((self._first,))
        with contextlib.suppress(Exception):
            await self._stream.aclose()

    async def _items(self) -> ItemStream:
        assert self._first is not None
        try:
            try:
                # Cancelling the run cancels this wait, and with it the prefetch.
                first = await self._first
            except StopAsyncIteration:
                return
            yield first
            async for item in self._stream:
                yield item
        finally:
            if not self._first.done():
                self._first.cancel()
                await asyncio.wait((self._first,))
            await self._stream.aclose()


#: Prefetches being dropped (their tasks must be referenced until they finish).
_DROPPING: set[asyncio.Future[None]] = set()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Prefetches:
    """Prefetched upstream responses, by session id, until their run takes them.

    The meeting point of the gateway's routes (which put them) and its agents
    (which take them): one per app, which hands it to both.
    """

    def __init__(self) -> None:
        self._by_session: dict[str, Prefetch] = {}

    def __len__(self) -> int:
        return len(self._by_session)

    def put(self, session_id: str, prefetch: Prefetch) -> None:
        self._by_session[session_id] = prefetch

    def pop(self, session_id: str) -> Prefetch | None:
        return self._by_session.pop(session_id, None)

    def discard(self, session_id: str) -> None:
        prefetch = self._by_session.pop(session_id, None)
        if prefetch is not None:
            prefetch.discard()


class GatewayAgent:
    #: A relayed completion whose process went away is ended, not continued:
    #: the client that asked for it holds the conversation and asks again.
    replay = False

    def __init__(
        self,
        provider: Provider,
        model: str,
        spec: GatewaySpec,
        prefetches: Prefetches,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.spec = spec
        #: Where the gateway leaves its prefetched responses for the run to take.
        self.prefetches = prefetches
        self.retry = retry or RetryPolicy()

    async def __call__(self, ctx: RunContext) -> None:
        request = model_request(self.model, to_chat(ctx.system, ctx.history), self.spec)
        request.run_id = ctx.run_id
        prefetch = self.prefetches.pop(ctx.session_id)
        first = prefetch.take(request) if prefetch is not None else None
        for call in await self._attempts(ctx, request, first):
            await offer_tool_call(ctx, call)

    async def _attempts(
        self,
        ctx: RunContext,
        request: ModelRequest,
        first: ItemStream | None = None,
    ) -> list[ToolCall]:
        attempt = 1
        while True:
            ctx.new_attempt()
            request.attempt = attempt
            calls: list[ToolCall] = []
            stream, first = first or self.provider.stream(request), None
            try:
                async with (
                    tracing.model_call(
                        self.provider.name, self.model, attempt, request.messages
                    ) as traced,
                    contextlib.aclosing(stream) as items,
                ):
                    async for item in items:
                        if isinstance(item, TextDelta):
                            await ctx.text(item.text)
                        elif isinstance(item, ReasoningDelta):
                            await ctx.reasoning(item.text)
                        elif isinstance(item, ReasoningSignature):
                            await ctx.reasoning_signature(item.signature)
                        elif isinstance(item, RedactedReasoning):
                            await ctx.redacted_reasoning(item.data)
                        elif isinstance(item, ToolCallItem):
                            calls.append(item.call)
                        elif isinstance(item, Usage):
                            await ctx.add_usage(**item.counts())
                    traced.finished(ctx.usage, calls)
                return calls
            except ProviderError as err:
                if not err.transient or attempt >= self.retry.max_attempts or ctx.attempt_parts:
                    raise classified(err) from None
                delay = self.retry.delay(attempt)
                await ctx.retry(attempt, delay, str(err))
                await asyncio.sleep(delay)
                attempt += 1


async def offer_tool_call(ctx: RunContext, call: ToolCall) -> None:
    """Place a tool call in the answer for the client to run; the run does not wait."""
    await ctx.place_tool_call(call.name, call.arguments or "{}", call_id=call.id)
