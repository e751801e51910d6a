"""A Pydantic AI agent served as a tether agent: ``serve(app, "helper", agent)``.

The agent runs in the server on the session's branch. Its model calls go
through tether's providers and keys: :class:`TetherModel` is a Pydantic AI
``Model`` backed by the run's :class:`~tether.agents.llm.ServerModel` (called
with ``emit=False``), so no provider key exists in agent code. What the model
streams is written to the session as Pydantic AI reads it (text, thinking,
tool calls with their arguments as they arrive; a retry is announced and
discards what the failed attempt wrote), and each tool's result goes on its
call. A tool with ``requires_approval=True`` waits for ``/tool-approvals``; an
external (deferred) tool waits for a client's ``/tool-results``. Cancelling the
run cancels the agent, which closes the upstream request.

A run that continues (after a restart, a failover, an answer to a suspended
run) runs the agent again from its start, replaying its journal: the model
calls made return their recorded output (not written to the session again),
and a tool whose result the log holds is not run again: its result is
returned instead (:class:`_Replay`, a capability around Pydantic AI's tool
execution).

A function rather than an ``App`` method, so that ``tether.App`` never imports
a framework: this module needs the ``tether[pydantic-ai]`` extra, tether does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from pydantic_ai import (
    Agent,
    BaseToolCallPart,
    BaseToolReturnPart,
    DeferredToolRequests,
    DeferredToolResults,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RequestUsage,
    SystemPromptPart,
    TextPart,
    ToolApproved,
    ToolCallPart,
    ToolDenied,
    ToolFailed,
    ToolReturnPart,
    UserError,
    UserPromptPart,
)
from pydantic_ai import RunContext as AgentRunContext
from pydantic_ai.capabilities import (
    AbstractCapability,
    HandleDeferredToolCalls,
    ValidatedToolArgs,
    WrapToolExecuteHandler,
)
from pydantic_ai.messages import ERROR_OUTCOMES, ModelResponseStreamEvent, TextContent, UserContent
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition

from tether.agents.app import App
from tether.agents.context import AgentContext
from tether.agents.llm import Retrying, ServerModel
from tether.providers.base import (
    ChatMessage,
    ReasoningDelta,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    ToolSpec,
    Usage,
)
from tether.runtime.context import RunContext, ToolOutcome, refusal
from tether.sessions import events as ev
from tether.sessions.fold import Message, Part

__all__ = ["TetherModel", "serve", "to_messages"]

#: Pydantic AI's model settings tether's providers take, by their name there.
_OPTIONS = {
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "stop_sequences": "stop",
    "parallel_tool_calls": "parallel_tool_calls",
}


def serve(app: App, name: str, agent: Agent[None, Any], *, model: str | None = None) -> None:
    """Serve ``agent`` as ``app``'s agent ``name`` (sessions created with ``{"agent": name}``).

    ``model`` is the server's model it calls (``"openai/gpt-4o-mini"``); without
    one, the session's, which for an agent's session is the offline ``demo``.
    """

    async def run(ctx: AgentContext) -> None:
        tools = _ToolEvents(ctx)
        result = await agent.run(
            ctx.history[-1].text,
            message_history=to_messages(ctx.history[:-1]),
            instructions=ctx.system,
            model=TetherModel(ctx.model(model), ctx),
            event_stream_handler=tools.record,
            capabilities=[_Replay(ctx), HandleDeferredToolCalls(handler=tools.answer)],
        )
        if not isinstance(result.output, str):  # structured output: its JSON is the answer
            await ctx.text(pydantic_core.to_json(result.output).decode())

    app.agent(name)(run)


class TetherModel(Model):
    """One of the server's models, as a Pydantic AI model for one run."""

    def __init__(self, server: ServerModel, ctx: RunContext) -> None:
        super().__init__()
        self._server = server
        self._ctx = ctx

    @property
    def model_name(self) -> str:
        return self._server.name

    @property
    def system(self) -> str:
        return "tether"

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """The whole response, streamed (and written to the session) all the same."""
        async with self.request_stream(messages, model_settings, model_request_parameters) as s:
            async for _ in s:
                pass
        return s.get()

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: AgentRunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        settings, params = self.prepare_request(model_settings, model_request_parameters)
        tools = [
            ToolSpec(t.name, t.description or "", t.parameters_json_schema)
            for t in params.tool_defs.values()
        ]
        items = self._server.stream(
            self._chat(messages, params),
            tools=tools,
            tool_choice="required" if tools and not params.allow_text_output else None,
            options=_options(settings),
            emit=False,
        )
        # A call made while the journal still holds steps is a replayed one (or diverges).
        replayed = self._ctx.replaying
        try:
            yield _Stream(
                model_request_parameters=params,
                _items=items,
                _mirror=_Mirror(self._ctx, params, replayed=replayed),
                _model_name=self.model_name,
            )
        finally:
            await items.aclose()  # a cancel closes the upstream request here

    def _chat(
        self, messages: list[ModelMessage], params: ModelRequestParameters
    ) -> list[ChatMessage]:
        chat: list[ChatMessage] = []
        for message in messages:
            if isinstance(message, ModelRequest):
                chat.extend(_request_messages(message))
            else:
                chat.append(_response_message(message))
        leading = next((i for i, m in enumerate(chat) if m.role != "system"), len(chat))
        instructions = self._get_instruction_parts(messages, params) or []
        chat[leading:leading] = [ChatMessage("system", p.content) for p in instructions]
        return chat


def _options(settings: ModelSettings | None) -> dict[str, Any]:
    given: dict[str, Any] = dict(settings or {})
    return {ours: given[theirs] for theirs, ours in _OPTIONS.items() if theirs in given}


def _request_messages(message: ModelRequest) -> Iterator[ChatMessage]:
    for part in message.parts:
        if isinstance(part, SystemPromptPart):
            yield ChatMessage("system", part.content)
        elif isinstance(part, UserPromptPart):
            yield ChatMessage("user", _text(part.content))
        elif isinstance(part, BaseToolReturnPart):
            yield ChatMessage(
                "tool",
                part.model_response_str(),
                tool_call_id=part.tool_call_id,
                is_error=part.outcome in ERROR_OUTCOMES,
            )
        else:
            raise UserError(f"tether's models cannot be sent a {type(part).__name__}")


def _response_message(message: ModelResponse) -> ChatMessage:
    text = "".join(p.content for p in message.parts if isinstance(p, TextPart))
    calls = [
        ToolCall(p.tool_call_id, p.tool_name, p.args_as_json_str())
        for p in message.parts
        if isinstance(p, BaseToolCallPart)
    ]
    return ChatMessage("assistant", text, calls)


def _text(content: str | Sequence[UserContent]) -> str:
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for item in content:
        if isinstance(item, str | TextContent):
            pieces.append(item if isinstance(item, str) else item.content)
        else:
            raise UserError(f"tether's models take text only, not {type(item).__name__}")
    return "\n".join(pieces)


@dataclasses.dataclass
class _Stream(StreamedResponse):
    """The server model's stream as Pydantic AI's events, mirrored into the session as read."""

    _items: AsyncGenerator[StreamItem | Retrying, None]
    _mirror: _Mirror
    _model_name: str
    _timestamp: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    #: The attempt being streamed; parts from index ``_kept_from`` on are its own.
    _attempt: int = 1
    _kept_from: int = 0
    #: Tool calls of this attempt whose arguments came as deltas.
    _streamed: set[str] = dataclasses.field(default_factory=set)

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        async for item in self._items:
            await self._mirror.write(item)
            for event in self._events(item):
                yield event

    def _events(self, item: StreamItem | Retrying) -> Iterator[ModelResponseStreamEvent]:
        parts = self._parts_manager
        if isinstance(item, TextDelta):
            yield from parts.handle_text_delta(
                vendor_part_id=(self._attempt, "text"), content=item.text
            )
        elif isinstance(item, ReasoningDelta):
            yield from parts.handle_thinking_delta(
                vendor_part_id=(self._attempt, "thinking"), content=item.text
            )
        elif isinstance(item, ToolCallDelta):
            first = item.id not in self._streamed
            self._streamed.add(item.id)
            yield from parts.handle_tool_call_delta_events(
                vendor_part_id=(self._attempt, item.id),
                tool_name=item.name if first else None,
                args=item.arguments,
                tool_call_id=item.id,
            )
        elif isinstance(item, ToolCallItem):
            call = item.call
            if call.id not in self._streamed:  # a provider that streams no argument deltas
                yield parts.handle_tool_call_part(
                    vendor_part_id=(self._attempt, call.id),
                    tool_name=call.name,
                    args=call.arguments,
                    tool_call_id=call.id,
                )
        elif isinstance(item, Usage):
            usage = RequestUsage(
                input_tokens=item.input_tokens,
                output_tokens=item.output_tokens,
                cache_read_tokens=item.cache_read_tokens,
                cache_write_tokens=item.cache_write_tokens,
                output_reasoning_tokens=item.reasoning_tokens,
            )
            self._add_usage(usage, reported=True)
        elif isinstance(item, Retrying):  # what the failed attempt gave is not the answer
            self._kept_from = len(parts.get_parts())
            self._attempt += 1
            self._streamed.clear()

    def get(self) -> ModelResponse:
        response = super().get()
        return dataclasses.replace(response, parts=list(response.parts[self._kept_from :]))

    async def close_stream(self) -> None:
        await self._items.aclose()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def provider_name(self) -> str:
        return "tether"

    @property
    def provider_url(self) -> None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp


class _Mirror:
    """Writes what a model streams to the session as the answer's parts.

    The calls of output tools (Pydantic AI's structured output) are not tool
    calls a person answers, so they are left out; a call of a tool that
    requires approval is marked so. What a ``replayed`` call returns is in the
    log already: only its usage counts.
    """

    def __init__(
        self, ctx: RunContext, params: ModelRequestParameters, *, replayed: bool = False
    ) -> None:
        self._ctx = ctx
        self._kinds = {t.name: t.kind for t in params.tool_defs.values()}
        self._parts: dict[str, str] = {}  # open tool call id -> its part
        self._replayed = replayed

    async def write(self, item: StreamItem | Retrying) -> None:
        ctx = self._ctx
        if self._replayed:
            if isinstance(item, Usage):
                await ctx.add_usage(**item.counts())
        elif isinstance(item, TextDelta):
            await ctx.text(item.text)
        elif isinstance(item, ReasoningDelta):
            await ctx.reasoning(item.text)
        elif isinstance(item, ToolCallDelta) and self._shown(item.name):
            part = self._parts.get(item.id)
            if part is None:
                part = self._parts[item.id] = await self._open(item.id, item.name)
            await ctx.tool_call_delta(part, item.arguments)
        elif isinstance(item, ToolCallItem) and self._shown(item.call.name):
            call = item.call
            part = self._parts.pop(call.id, None)
            if part is None:  # a provider that streams no argument deltas
                part = await self._open(call.id, call.name)
            await ctx.tool_call_end(part, call.arguments or "{}")
        elif isinstance(item, Usage):
            await ctx.add_usage(**item.counts())
        elif isinstance(item, Retrying):
            await ctx.retry(item.attempt, item.delay, item.error)
            self._parts.clear()

    def _shown(self, tool: str) -> bool:
        return self._kinds.get(tool) != "output"

    async def _open(self, call_id: str, name: str) -> str:
        approval = self._kinds.get(name) == "unapproved"
        return await self._ctx.tool_call_start(call_id, name, approval=approval)


@dataclasses.dataclass
class _Replay(AbstractCapability[Any]):
    """A tool call whose result the log holds returns it, without the tool running again.

    The log holds it when the run continues: the tool ran (or a client
    answered) before the run's process went away. An error comes back as
    :class:`~pydantic_ai.ToolFailed`, which the model is shown as it was.
    """

    run: RunContext

    async def wrap_tool_execute(
        self,
        ctx: AgentRunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        outcome = self.run.recorded_outcome(call.tool_call_id)
        if outcome is None:
            return await handler(args)
        if outcome.ok:
            return outcome.output
        raise ToolFailed(outcome.error or "failed")


class _ToolEvents:
    """The agent's tool results, put on their calls; its deferred calls, answered by clients."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._answered: set[str] = set()  # calls whose result a client posted (already recorded)

    async def record(self, run: AgentRunContext[None], events: AsyncIterable[Any]) -> None:
        async for event in events:
            if not isinstance(event, FunctionToolResultEvent):
                continue
            call_id = event.tool_call_id
            if call_id not in self._answered and self._ctx.recorded_outcome(call_id) is None:
                await self._ctx.tool_result(call_id, _outcome(event.part))

    async def answer(
        self, run: AgentRunContext[None], requests: DeferredToolRequests
    ) -> DeferredToolResults:
        """Wait for the approvals (``/tool-approvals``) and external results (``/tool-results``)."""
        ctx = self._ctx
        async with asyncio.TaskGroup() as group:
            verdicts = {
                c.tool_call_id: group.create_task(ctx.wait_approval(c.tool_call_id))
                for c in requests.approvals
            }
            outcomes = {
                c.tool_call_id: group.create_task(ctx.wait_result(c.tool_call_id))
                for c in requests.calls
            }
        self._answered.update(outcomes)
        approvals: dict[str, bool | ToolApproved | ToolDenied] = {}
        for call_id, task in verdicts.items():
            verdict = task.result()
            approved = verdict.approved
            approvals[call_id] = ToolApproved() if approved else ToolDenied(refusal(verdict))
        calls: dict[str, Any] = {}
        for call_id, result in outcomes.items():
            outcome = result.result()
            calls[call_id] = outcome.output if outcome.ok else ToolFailed(outcome.error or "failed")
        return DeferredToolResults(approvals=approvals, calls=calls)


def _outcome(part: ToolReturnPart) -> ToolOutcome:
    if part.outcome == "success":
        return ToolOutcome(output=pydantic_core.to_jsonable_python(part.content))
    return ToolOutcome(error=part.model_response_str(wrap_if_error=False))


def to_messages(history: list[Message]) -> list[ModelMessage]:
    """A session's messages as Pydantic AI's: a model step's response, then its tool results."""
    out: list[ModelMessage] = []
    for msg in history:
        if msg.role == "user":
            out.append(ModelRequest(parts=[UserPromptPart(msg.text)]))
            continue
        step: list[TextPart | ToolCallPart] = []
        results: list[ToolReturnPart] = []
        for part in msg.parts:
            if part.kind == ev.TEXT and results:  # text after tool results: the next step
                out += [ModelResponse(parts=step), ModelRequest(parts=results)]
                step, results = [], []
            if part.kind == ev.TEXT:
                step.append(TextPart(part.text))
            elif part.kind == ev.TOOL_CALL and part.tool_call_id:
                step.append(ToolCallPart(part.tool_name or "", part.value, part.tool_call_id))
                if part.answered:
                    results.append(_result(part))
        if step:
            out.append(ModelResponse(parts=step))
        if results:
            out.append(ModelRequest(parts=results))
    return out


def _result(part: Part) -> ToolReturnPart:
    failed = part.error is not None
    return ToolReturnPart(
        part.tool_name or "",
        part.error if failed else part.result,
        part.tool_call_id or "",
        outcome="failed" if failed else "success",
    )
