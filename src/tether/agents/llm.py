"""The server's models, as an agent calls them: ``ctx.model("openai/gpt-4o-mini")``.

A :class:`ServerModel` streams one model response through the server's
providers, with the server's keys (agent code never sees one) and its retry
policy: a transient failure (timeout, 429, 5xx) is retried with backoff, and
each retry is announced with a ``retry`` event that discards what the failed
attempt streamed. Cancelling the run closes the upstream request. A call
that completes is journaled (tether.runtime.journal): when its run continues
after a restart, it returns what was recorded without asking the upstream again.

By default what the model streams is appended to the session as the answer
(text, reasoning, tool calls with their arguments as they arrive); with
``emit=False`` the agent only gets the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.agents.tools import Toolset, client_tool_spec
from tether.observability import tracing
from tether.providers.base import (
    ChatMessage,
    ItemStream,
    ModelRequest,
    Provider,
    ProviderError,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    ToolSpec,
    Usage,
)
from tether.runtime.journal import fingerprint

if TYPE_CHECKING:
    from tether.runtime.context import RunContext

#: A tool name OpenAI and Anthropic accept.
WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNFIT = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.base_delay * 2 ** (attempt - 1), self.max_delay)


@dataclass(slots=True)
class Retrying:
    """Streamed by :meth:`ServerModel.stream` before a retry: drop what this attempt gave."""

    attempt: int
    delay: float
    error: str


@dataclass(slots=True)
class Reply:
    """One model response, whole."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


Tools = Toolset | Iterable[ToolSpec | dict[str, Any]] | None
Messages = Iterable[ChatMessage | dict[str, Any]]


class ServerModel:
    """One of the server's models, bound to a run (see the module's docstring)."""

    def __init__(
        self,
        ctx: RunContext,
        provider: Provider,
        model: str,
        retry: RetryPolicy,
        *,
        needs_approval: Toolset | None = None,
    ) -> None:
        self._ctx = ctx
        self._provider = provider
        self._approvals = needs_approval or Toolset()
        #: The model's name at its provider (without the provider's prefix).
        self.name = model
        self.retry = retry

    async def respond(
        self,
        messages: Messages,
        *,
        tools: Tools = None,
        tool_choice: str | dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        emit: bool = True,
    ) -> Reply:
        """Stream one response to its end and return it whole."""
        output = _Output()
        stream = self.stream(
            messages, tools=tools, tool_choice=tool_choice, options=options, emit=emit
        )
        async with contextlib.aclosing(stream) as items:
            async for item in items:
                if isinstance(item, Retrying):
                    output = _Output()  # what the failed attempt gave is dropped
                else:
                    output.add(item)
        return output.reply()

    async def stream(
        self,
        messages: Messages,
        *,
        tools: Tools = None,
        tool_choice: str | dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        emit: bool = True,
    ) -> AsyncGenerator[StreamItem | Retrying, None]:
        """Stream one response: text, reasoning, tool-call deltas and calls, usage.

        A transient failure is retried: :class:`Retrying` comes first, then
        the new attempt's items from the start.
        """
        specs = _specs(tools)
        chat = [_message(m) for m in messages]
        ctx = self._ctx
        key = ctx.journal.key("model")
        digest = fingerprint(self.name, [_shape(m) for m in chat])
        entry = ctx.replayed(key, digest)
        if entry is not None:
            async for replayed in _replay(entry["value"], ctx):
                yield replayed
            return
        names = WireNames([s.name for s in specs] + [c.name for m in chat for c in m.tool_calls])
        request = ModelRequest(
            self.name,
            [names.message(m) for m in chat] if names else chat,
            tools=[names.spec(s) for s in specs] if names else specs,
            tool_choice=tool_choice,
            options=dict(options or {}),
            run_id=self._ctx.run_id,
        )
        attempt = 1
        ctx.begin_step()
        try:
            while True:
                request.attempt = attempt
                if emit:  # the parts a retry discards are those this stream appended
                    ctx.new_attempt()
                output = _Output()
                try:
                    with tracing.model_call(self._provider.name, self.name, attempt, chat) as call:
                        async for item in self._attempt(request, emit, names):
                            output.add(item)
                            yield item
                        call.finished(output.usage, output.calls, output.text)
                    break
                except ProviderError as err:
                    if not err.transient or attempt >= self.retry.max_attempts:
                        raise
                    delay = self.retry.delay(attempt)
                    if emit:
                        await ctx.retry(attempt, delay, str(err))
                    yield Retrying(attempt, delay, str(err))
                    await asyncio.sleep(delay)
                    attempt += 1
        finally:
            ctx.end_step()
        await ctx.journaled("model", key, output.value(emit), digest)

    async def _attempt(
        self, request: ModelRequest, emit: bool, names: WireNames
    ) -> AsyncGenerator[StreamItem, None]:
        source = self._provider.stream(request)
        if not emit:
            # aclosing: a cancel that lands while the caller holds an item must
            # close the upstream request now, not when the generator is collected.
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    yield _named(item, names)
            return
        # The upstream is read by a task of its own, so that what arrived
        # together (chunks of one network read) is written in one append.
        arrived: asyncio.Queue[StreamItem | Exception | None] = asyncio.Queue()
        reading = asyncio.create_task(_read(source, arrived))
        parts: dict[str, str] = {}  # tool call id -> its part
        try:
            while True:
                batch = [await arrived.get()]
                while not arrived.empty():
                    batch.append(arrived.get_nowait())
                written: list[StreamItem] = []
                ended: Exception | None = None
                self._ctx.hold()
                try:
                    for got in batch:
                        if got is None or isinstance(got, Exception):
                            ended = got
                            break
                        item = _named(got, names)
                        await self._emit(item, parts)
                        written.append(item)
                finally:
                    await self._ctx.release()
                for item in written:
                    yield item
                if ended is not None:
                    raise ended
                if len(written) < len(batch):  # the stream's end
                    return
        finally:
            reading.cancel()  # closes the upstream request, if it is still open
            await asyncio.gather(reading, return_exceptions=True)

    async def _emit(self, item: StreamItem, parts: dict[str, str]) -> None:
        """Append ``item`` to the answer; ``parts`` maps open tool calls to their parts."""
        ctx = self._ctx
        if isinstance(item, TextDelta):
            await ctx.text(item.text)
        elif isinstance(item, ReasoningDelta):
            await ctx.reasoning(item.text)
        elif isinstance(item, ReasoningSignature):
            await ctx.reasoning_signature(item.signature)
        elif isinstance(item, RedactedReasoning):
            await ctx.redacted_reasoning(item.data)
        elif isinstance(item, ToolCallDelta):
            part = parts.get(item.id)
            if part is None:
                part = parts[item.id] = await self._open_call(item.id, item.name)
            await ctx.tool_call_delta(part, item.arguments)
        elif isinstance(item, ToolCallItem):
            call = item.call
            part = parts.pop(call.id, None)
            if part is None:  # a provider that streams no argument deltas
                part = await self._open_call(call.id, call.name)
            await ctx.tool_call_end(part, call.arguments or "{}")
        elif isinstance(item, Usage):
            await ctx.add_usage(**item.counts())

    async def _open_call(self, call_id: str, name: str) -> str:
        approval = self._approvals.needs_approval(name)
        return await self._ctx.tool_call_start(call_id, name, approval=approval)


class _Output:
    """One attempt's output, gathered as it streams (for the journal, and for ``respond``)."""

    __slots__ = ("calls", "reasoning", "text", "usage")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[list[str]] = []
        self.usage: dict[str, int] = {}

    def add(self, item: StreamItem) -> None:
        if isinstance(item, TextDelta):
            self.text.append(item.text)
        elif isinstance(item, ReasoningDelta):
            self.reasoning.append(item.text)
        elif isinstance(item, ToolCallItem):
            call = item.call
            self.calls.append([call.id, call.name, call.arguments])
        elif isinstance(item, Usage):
            for name, n in item.counts().items():
                self.usage[name] = self.usage.get(name, 0) + n

    def reply(self) -> Reply:
        return Reply(
            text="".join(self.text),
            reasoning="".join(self.reasoning),
            tool_calls=[ToolCall(*call) for call in self.calls],
            usage=Usage(**self.usage),
        )

    def value(self, emitted: bool) -> dict[str, Any]:
        """The journal entry's value; ``emitted``: its usage counted in the run's."""
        out: dict[str, Any] = {"text": "".join(self.text)}
        if self.reasoning:
            out["reasoning"] = "".join(self.reasoning)
        if self.calls:
            out["tool_calls"] = self.calls
        if self.usage:
            out["usage"] = self.usage
        if emitted:
            out["emitted"] = True
        return out


async def _replay(value: dict[str, Any], ctx: RunContext) -> AsyncGenerator[StreamItem, None]:
    """A journaled call's output, as the items the live call streamed (whole, not in pieces)."""
    if value.get("reasoning"):
        yield ReasoningDelta(value["reasoning"])
    if value.get("text"):
        yield TextDelta(value["text"])
    for call_id, name, arguments in value.get("tool_calls", ()):
        yield ToolCallItem(ToolCall(call_id, name, arguments))
    usage = value.get("usage")
    if usage:
        if value.get("emitted"):
            await ctx.add_usage(**usage)
        yield Usage(**usage)


def _shape(m: ChatMessage) -> list[Any]:
    """What of a message a replayed call must ask again, for its fingerprint."""
    return [
        m.role, m.content, m.tool_call_id, [[c.id, c.name, c.arguments] for c in m.tool_calls],
    ]  # fmt: skip


class WireNames:
    """tether's tool names as names an upstream accepts, and the upstream's calls back.

    OpenAI and Anthropic take only ``[A-Za-z0-9_-]{1,64}``; an MCP tool is
    ``server.tool`` in tether (and may hold other characters). Such a name is
    offered as ``server__tool`` (other characters as ``_``), with a hash of the
    name appended when that is too long or taken, and the calls the model
    streams get tether's name back. Names that fit are left alone, so a
    request without such names is unchanged. This is the one place names are
    translated: events, declarations and ``/v1/tools`` only know tether's.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._wire: dict[str, str] = {}  # tether's name -> the upstream's
        self._tether: dict[str, str] = {}  # the upstream's name -> tether's
        unfit = [n for n in dict.fromkeys(names) if not WIRE_NAME.match(n)]
        if not unfit:
            return
        taken = {n for n in names if WIRE_NAME.match(n)}
        for name in unfit:
            wire = _UNFIT.sub("_", name.replace(".", "__"))
            if len(wire) > 64 or wire in taken:
                digest = hashlib.sha256(name.encode()).hexdigest()[:8]
                wire = f"{wire[:55]}_{digest}"
            taken.add(wire)
            self._wire[name] = wire
            self._tether[wire] = name

    def __bool__(self) -> bool:
        return bool(self._wire)

    def spec(self, spec: ToolSpec) -> ToolSpec:
        wire = self._wire.get(spec.name)
        return spec if wire is None else ToolSpec(wire, spec.description, spec.parameters)

    def message(self, message: ChatMessage) -> ChatMessage:
        if not any(c.name in self._wire for c in message.tool_calls):
            return message
        calls = [
            ToolCall(c.id, self._wire.get(c.name, c.name), c.arguments) for c in message.tool_calls
        ]
        return dataclasses.replace(message, tool_calls=calls)

    def restore(self, item: ToolCallDelta | ToolCallItem) -> ToolCallDelta | ToolCallItem:
        """A streamed call with tether's name for the tool."""
        if isinstance(item, ToolCallDelta):
            name = self._tether.get(item.name)
            return item if name is None else ToolCallDelta(item.id, name, item.arguments)
        call = item.call
        name = self._tether.get(call.name)
        return item if name is None else ToolCallItem(ToolCall(call.id, name, call.arguments))


def _named(item: StreamItem, names: WireNames) -> StreamItem:
    """``item`` with tether's tool names (the upstream saw their wire aliases)."""
    if names and isinstance(item, ToolCallDelta | ToolCallItem):
        return names.restore(item)
    return item


async def _read(source: ItemStream, arrived: asyncio.Queue[StreamItem | Exception | None]) -> None:
    """Put ``source``'s items in ``arrived``, then None at its end (or the error it raised)."""
    try:
        async with contextlib.aclosing(source) as items:
            async for item in items:
                arrived.put_nowait(item)
    except Exception as err:
        arrived.put_nowait(err)
        return
    arrived.put_nowait(None)


def _specs(tools: Tools) -> list[ToolSpec]:
    if tools is None:
        return []
    if isinstance(tools, Toolset):
        return list(tools.specs)
    return [t if isinstance(t, ToolSpec) else client_tool_spec(t) for t in tools]


def _message(m: ChatMessage | dict[str, Any]) -> ChatMessage:
    """``{"role", "content"}`` dicts (plain text) as ChatMessages, for agents' convenience."""
    if isinstance(m, ChatMessage):
        return m
    content = m.get("content", "")
    if not isinstance(content, str):
        content = json.dumps(content)
    return ChatMessage(str(m.get("role", "user")), content)
