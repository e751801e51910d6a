"""An OpenAI Agents SDK agent served as a tether agent: ``serve(app, "triage", agent)``.

The SDK runs the agent (its loop, tools, handoffs, guardrails); tether runs
its model calls and keeps the session:

- Every model call goes through the server's providers and keys: the SDK gets
  a :class:`TetherModelProvider`, whose models are the run's
  :class:`~tether.agents.llm.ServerModel` (``emit=False``; retries and
  cancellation as for any run). An SDK agent's ``model`` is a model name tether
  serves (``"openai/gpt-4o-mini"``); none means ``serve``'s ``model``, or the
  session's. Agent code holds no key, and the SDK's tracing is off for the
  run, so nothing is sent to api.openai.com.
- What the SDK streams is written to the session: text, reasoning, each tool
  call with its arguments as they stream, then its result. A handoff is what
  the model asked for, a ``transfer_to_<agent>`` tool call, whose result names
  the agent that takes over: ``{"agent": "Billing"}``.
- A tool with ``needs_approval`` waits for a ``/tool-approvals`` answer: the
  SDK's interruption is resumed with the verdict, and a refusal is the call's
  error (what the model is told). When ``needs_approval`` is a function, the
  SDK decides per call, so the call is shown once it has decided (whole, not
  streamed).
- Cancelling the run cancels the SDK's run and its upstream request.
- A run that continues (after a restart, a failover, an answer to a suspended
  run) runs the SDK again from its start, replaying its journal: the model
  calls made return their recorded output (not written to the session
  again), and a function tool whose result the log holds is not run again:
  its result is returned instead. For that the SDK runs a copy of the agent
  (and of those it hands off to) whose function tools ask the log first
  (:func:`_replay_safe`); the agents given to :func:`serve` are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from agents import (
    Agent,
    AgentBase,
    AgentOutputSchemaBase,
    FunctionTool,
    Handoff,
    HandoffOutputItem,
    Model,
    ModelProvider,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    RunConfig,
    RunItemStreamEvent,
    Runner,
    RunState,
    StreamEvent,
    Tool,
    ToolCallOutputItem,
    TResponseInputItem,
)
from agents import Usage as SdkUsage
from agents.items import TResponseStreamEvent
from agents.models.chatcmpl_converter import Converter
from agents.result import RunResultStreaming
from agents.run import DEFAULT_MAX_TURNS
from agents.tool import invoke_function_tool
from agents.tool_context import ToolContext
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseReasoningTextDeltaEvent,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_reasoning_item import Content as ReasoningContent
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

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
from tether.runtime.context import ToolOutcome, refusal
from tether.sessions import events as ev
from tether.sessions.events import new_id
from tether.sessions.fold import Part


def serve(
    app: App,
    name: str,
    agent: Agent[Any],
    *,
    model: str | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
) -> None:
    """Serve ``agent`` as ``app``'s agent ``name``: sessions created with ``{"agent": name}``.

    ``model`` (a model tether serves, ``"openai/gpt-4o-mini"``) answers for
    the SDK agents that name none; without it, those use the session's model.
    """
    if isinstance(agent.model, Model):
        raise ValueError(
            f"agent {agent.name!r} brings its own Model, which would bypass tether's providers "
            "and keys: give it a model name tether serves (or none, for the session's model)"
        )

    async def run(ctx: AgentContext) -> None:
        await _run(ctx, agent, model, max_turns)

    app.agent(name)(run)


async def _run(ctx: AgentContext, agent: Agent[Any], model: str | None, max_turns: int) -> None:
    """Run the SDK's loop to its end, answering each interruption with tether's approvals."""
    provider = TetherModelProvider(ctx, model)
    config = RunConfig(model_provider=provider, tracing_disabled=True)
    agent = _replay_safe(agent, ctx)
    writer = _SessionWriter(ctx, provider.mirror)
    run_input: list[TResponseInputItem] | RunState[Any] = history_items(ctx)
    while True:
        result = Runner.run_streamed(agent, run_input, max_turns=max_turns, run_config=config)
        try:
            async for event in result.stream_events():
                await writer.write(event)
        finally:
            await _stop(result)
        if not result.interruptions:
            return
        run_input = await writer.decide(result)


async def _stop(result: RunResultStreaming) -> None:
    """Stop the SDK's run if it still runs (a cancel), and wait until its task has ended."""
    task = result.run_loop_task
    if task is None or task.done():
        return
    result.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _replay_safe(
    agent: Agent[Any], ctx: AgentContext, copies: dict[int, tuple[Any, Agent[Any]]] | None = None
) -> Agent[Any]:
    """A copy of ``agent`` for one run, whose function tools do not run again on replay.

    Each function tool asks the log first: a call whose result the log holds
    (the run continues after its process went away) returns that result. The
    agents it hands off to are copied alike; a :class:`Handoff`'s agent when
    the handoff happens (only then does the SDK name it).
    """
    copies = {} if copies is None else copies
    known = copies.get(id(agent))
    if known is not None:
        return known[1]
    tools = [_replayed_tool(t, ctx) if isinstance(t, FunctionTool) else t for t in agent.tools]
    safe = agent.clone(tools=tools)
    copies[id(agent)] = (agent, safe)  # the original held too: its id stays its own
    safe.handoffs = [
        _replay_safe(h, ctx, copies) if isinstance(h, Agent) else _replayed_handoff(h, ctx, copies)
        for h in agent.handoffs
    ]
    return safe


def _replayed_tool(tool: FunctionTool, ctx: AgentContext) -> FunctionTool:
    """``tool``, answering a call with the result the log holds for it (if it does)."""

    async def invoke(context: ToolContext[Any], arguments: str) -> Any:
        outcome = ctx.recorded_outcome(context.tool_call_id)
        if outcome is None:
            return await invoke_function_tool(
                function_tool=tool, context=context, arguments=arguments
            )
        return outcome.output if outcome.ok else outcome.error

    safe = copy.copy(tool)
    safe.on_invoke_tool = invoke
    return safe


def _replayed_handoff(
    handoff: Handoff[Any, Any], ctx: AgentContext, copies: dict[int, tuple[Any, Agent[Any]]]
) -> Handoff[Any, Any]:
    """``handoff``, handing over to the replay-safe copy of its agent."""
    invoke_handoff = handoff.on_invoke_handoff

    async def invoke(context: Any, arguments: str) -> Any:
        target: AgentBase[Any] = await invoke_handoff(context, arguments)
        return _replay_safe(target, ctx, copies) if isinstance(target, Agent) else target

    return dataclasses.replace(handoff, on_invoke_handoff=invoke)


def history_items(ctx: AgentContext) -> list[TResponseInputItem]:
    """The session's branch as the SDK's input items, each answer's parts in their order."""
    items: list[dict[str, Any]] = []
    if ctx.system:
        items.append({"role": "system", "content": ctx.system})
    for message in ctx.history:
        if message.role == "user":
            items.append({"role": "user", "content": message.text})
        else:
            for part in message.parts:
                items.extend(_part_items(part))
    return cast(list[TResponseInputItem], items)


def _part_items(part: Part) -> list[dict[str, Any]]:
    """An answer's part as input items: its text, or a tool call and (once known) its result."""
    if part.kind == ev.TEXT:
        return [{"role": "assistant", "content": part.text}] if part.text else []
    if part.kind != ev.TOOL_CALL or not part.tool_call_id:
        return []
    call_id = part.tool_call_id
    items: list[dict[str, Any]] = [
        {
            "type": "function_call",
            "call_id": call_id,
            "name": part.tool_name or "",
            "arguments": json.dumps(part.value),
        }
    ]
    if part.error is not None:
        items.append({"type": "function_call_output", "call_id": call_id, "output": part.error})
    elif part.answered:
        output = part.result if isinstance(part.result, str) else json.dumps(part.result)
        items.append({"type": "function_call_output", "call_id": call_id, "output": output})
    return items


# -- the model side: the SDK's Model over a ServerModel -------------------------------


class TetherModelProvider(ModelProvider):
    """The SDK's models, as the run's server models (``None``: ``default``, or the session's)."""

    def __init__(self, ctx: AgentContext, default: str | None = None) -> None:
        self._ctx = ctx
        self._default = default
        #: Writes what the models stream to the session.
        self.mirror = _Mirror(ctx)

    def get_model(self, model_name: str | None) -> Model:
        model = self._ctx.model(model_name or self._default)
        return TetherModel(self._ctx, model, self.mirror)


class TetherModel(Model):
    """One of the server's models, answering the SDK in the Responses API's events.

    What it streams is written to the session (by ``mirror``) as it streams.
    """

    def __init__(self, ctx: AgentContext, model: ServerModel, mirror: _Mirror) -> None:
        self._ctx = ctx
        self._model = model
        self._mirror = mirror

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        stream = self._events(
            system_instructions, input, model_settings, tools, output_schema, handoffs
        )
        final: Response | None = None
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if isinstance(event, ResponseCompletedEvent):
                    final = event.response
        assert final is not None  # stream_response always ends with it
        return ModelResponse(output=final.output, usage=_sdk_usage(final.usage), response_id=None)

    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        events = self._events(
            system_instructions, input, model_settings, tools, output_schema, handoffs
        )
        return self._mirror.through(events, tools)

    async def _events(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
    ) -> AsyncGenerator[TResponseStreamEvent, None]:
        """One model call's events; a retry starts a new response (:class:`RetriedResponse`)."""
        specs = [*map(_tool_spec, tools), *map(_handoff_spec, handoffs)]
        # A call made while the journal still holds steps is a replayed one (or diverges).
        replayed = self._ctx.replaying
        stream = self._model.stream(
            chat_messages(system_instructions, input),
            tools=specs,
            tool_choice=_tool_choice(model_settings) if specs else None,
            options=_options(model_settings, output_schema, bool(specs)),
            emit=False,
        )
        response = _ResponseEvents(self._model.name)
        yield response.created(replayed=replayed)
        async with contextlib.aclosing(stream) as items:
            async for item in items:
                if isinstance(item, Retrying):
                    response = _ResponseEvents(self._model.name)
                    yield response.created(item)
                elif isinstance(item, Usage):
                    await self._ctx.add_usage(**item.counts())
                    response.usage = item
                else:
                    for event in response.add(item):
                        yield event
        for event in response.completed():
            yield event


class ReplayedResponse(ResponseCreatedEvent):
    """A response the journal recorded, replayed: what it streams is in the session already."""


class RetriedResponse(ResponseCreatedEvent):
    """A new attempt's response, after a transient failure: drop what the last one streamed."""

    attempt: int
    delay: float
    error: str


def chat_messages(system: str | None, input: str | list[TResponseInputItem]) -> list[ChatMessage]:
    """The SDK's input (Responses API items) as tether's provider messages."""
    out = [ChatMessage("system", system)] if system else []
    for m in cast(list[dict[str, Any]], Converter.items_to_messages(input)):
        content = _text(m.get("content"))
        if m["role"] == "tool":
            out.append(ChatMessage("tool", content, tool_call_id=m["tool_call_id"]))
        elif m["role"] == "assistant":
            calls = [
                ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in m.get("tool_calls") or []
                if c.get("type") == "function"
            ]
            out.append(ChatMessage("assistant", content, calls))
        else:  # system, developer, user
            out.append(ChatMessage("user" if m["role"] == "user" else "system", content))
    return out


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _tool_spec(tool: Tool) -> ToolSpec:
    if not isinstance(tool, FunctionTool):
        raise TypeError(
            f"tool {tool.name!r} is a {type(tool).__name__}: through tether's providers an "
            "Agents SDK agent can use function tools (and handoffs) only"
        )
    return ToolSpec(tool.name, tool.description, tool.params_json_schema)


def _handoff_spec(handoff: Handoff) -> ToolSpec:
    return ToolSpec(handoff.tool_name, handoff.tool_description, handoff.input_json_schema)


def _tool_choice(settings: ModelSettings) -> str | dict[str, Any] | None:
    choice = settings.tool_choice
    if choice is None or choice in ("auto", "required", "none"):
        return choice
    if isinstance(choice, str):
        return {"type": "function", "function": {"name": choice}}
    raise TypeError(f"tool_choice {choice!r} needs OpenAI's hosted MCP, which tether does not run")


#: The SDK's model settings tether's providers take, under the same names.
_SETTINGS = ("temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")


def _options(
    settings: ModelSettings, output_schema: AgentOutputSchemaBase | None, with_tools: bool
) -> dict[str, Any]:
    options = {k: v for k in _SETTINGS if (v := getattr(settings, k)) is not None}
    if with_tools and settings.parallel_tool_calls is not None:
        options["parallel_tool_calls"] = settings.parallel_tool_calls
    if output_schema is not None and not output_schema.is_plain_text():
        options["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "final_output",
                "strict": output_schema.is_strict_json_schema(),
                "schema": output_schema.json_schema(),
            },
        }
    return options


def _sdk_usage(usage: ResponseUsage | None) -> SdkUsage:
    if usage is None:
        return SdkUsage()
    return SdkUsage(
        requests=1,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_tokens_details=usage.input_tokens_details,
        output_tokens_details=usage.output_tokens_details,
    )


@dataclass(slots=True)
class _Item:
    """One output item of a response as it streams: a message, a reasoning or a call."""

    id: str
    index: int
    pieces: list[str] = field(default_factory=list)


class _ResponseEvents:
    """One attempt's answer as Responses API events, from tether's stream items."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = new_id("resp")
        self.usage: Usage | None = None
        self._seq = itertools.count()
        self._items: dict[str, _Item] = {}  # "text", "reasoning" or a call's id -> the item
        self._done: dict[str, ResponseOutputItem] = {}  # item id -> its final form

    def created(
        self, retry: Retrying | None = None, *, replayed: bool = False
    ) -> ResponseCreatedEvent:
        response = self._response([])
        if retry is None:
            kind = ReplayedResponse if replayed else ResponseCreatedEvent
            return kind(response=response, sequence_number=next(self._seq), type="response.created")
        return RetriedResponse(
            response=response,
            sequence_number=next(self._seq),
            type="response.created",
            attempt=retry.attempt,
            delay=retry.delay,
            error=retry.error,
        )

    def add(self, item: StreamItem) -> list[TResponseStreamEvent]:
        if isinstance(item, TextDelta):
            return self._text_delta(item.text)
        if isinstance(item, ReasoningDelta):
            return self._reasoning_delta(item.text)
        if isinstance(item, ToolCallDelta):
            return self._call_delta(item)
        if isinstance(item, ToolCallItem):
            return self._call_done(item.call)
        return []

    def _open(self, key: str, first: ResponseOutputItem | None) -> tuple[_Item, list[Any]]:
        entry = self._items.get(key)
        if entry is not None:
            return entry, []
        item_id = first.id if first is not None and first.id else new_id(key[:4])
        entry = self._items[key] = _Item(item_id, len(self._items))
        if first is None:
            first = self._message(entry) if key == "text" else self._reasoning(entry)
        added = ResponseOutputItemAddedEvent(
            item=first,
            output_index=entry.index,
            sequence_number=next(self._seq),
            type="response.output_item.added",
        )
        return entry, [added]

    def _text_delta(self, text: str) -> list[TResponseStreamEvent]:
        entry, events = self._open("text", None)
        entry.pieces.append(text)
        events.append(
            ResponseTextDeltaEvent(
                content_index=0,
                delta=text,
                item_id=entry.id,
                logprobs=[],
                output_index=entry.index,
                sequence_number=next(self._seq),
                type="response.output_text.delta",
            )
        )
        return events

    def _reasoning_delta(self, text: str) -> list[TResponseStreamEvent]:
        entry, events = self._open("reasoning", None)
        entry.pieces.append(text)
        events.append(
            ResponseReasoningTextDeltaEvent(
                content_index=0,
                delta=text,
                item_id=entry.id,
                output_index=entry.index,
                sequence_number=next(self._seq),
                type="response.reasoning_text.delta",
            )
        )
        return events

    def _call_delta(self, delta: ToolCallDelta) -> list[TResponseStreamEvent]:
        first = _function_call(ToolCall(delta.id, delta.name, ""), "in_progress")
        entry, events = self._open(delta.id, first)
        if delta.arguments:
            events.append(
                ResponseFunctionCallArgumentsDeltaEvent(
                    delta=delta.arguments,
                    item_id=entry.id,
                    output_index=entry.index,
                    sequence_number=next(self._seq),
                    type="response.function_call_arguments.delta",
                )
            )
        return events

    def _call_done(self, call: ToolCall) -> list[TResponseStreamEvent]:
        entry, events = self._open(
            call.id, _function_call(ToolCall(call.id, call.name, ""), "in_progress")
        )
        done = _function_call(call, "completed")
        return [*events, self._item_done(entry, done)]

    def _item_done(self, entry: _Item, item: ResponseOutputItem) -> ResponseOutputItemDoneEvent:
        self._done[entry.id] = item
        return ResponseOutputItemDoneEvent(
            item=item,
            output_index=entry.index,
            sequence_number=next(self._seq),
            type="response.output_item.done",
        )

    def completed(self) -> list[TResponseStreamEvent]:
        events: list[TResponseStreamEvent] = []
        for key, entry in self._items.items():
            if entry.id not in self._done:
                final = self._message(entry) if key == "text" else self._reasoning(entry)
                events.append(self._item_done(entry, final))
        output = [self._done[e.id] for e in sorted(self._items.values(), key=lambda e: e.index)]
        response = self._response(output)
        response.usage = _response_usage(self.usage)
        events.append(
            ResponseCompletedEvent(
                response=response, sequence_number=next(self._seq), type="response.completed"
            )
        )
        return events

    def _message(self, entry: _Item) -> ResponseOutputMessage:
        text = ResponseOutputText(annotations=[], text="".join(entry.pieces), type="output_text")
        return ResponseOutputMessage(
            id=entry.id,
            content=[text] if entry.pieces else [],
            role="assistant",
            status="completed",
            type="message",
        )

    def _reasoning(self, entry: _Item) -> ResponseReasoningItem:
        content = ReasoningContent(text="".join(entry.pieces), type="reasoning_text")
        return ResponseReasoningItem(id=entry.id, summary=[], content=[content], type="reasoning")

    def _response(self, output: list[ResponseOutputItem]) -> Response:
        return Response(
            id=self.id,
            created_at=time.time(),
            model=self.model,
            object="response",
            output=output,
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
        )


def _function_call(call: ToolCall, status: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=f"fc_{call.id}",
        call_id=call.id,
        name=call.name,
        arguments=call.arguments,
        type="function_call",
        status=cast(Any, status),
    )


def _response_usage(usage: Usage | None) -> ResponseUsage | None:
    if usage is None:
        return None
    return ResponseUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
    )


# -- the session side: what the SDK streams, written as tether's events ---------------


class _Mirror:
    """Writes what the SDK's models stream to the session as the answer's parts.

    Written as the model streams, in the task that reads it (the SDK's), so
    that a model call's output is in the session before its journal entry,
    which the end of its stream writes; the SDK's own stream events come to
    :class:`_SessionWriter` later, in another task.
    """

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        #: The tools of the agent whose model streams now.
        self._tools: list[Tool] = []
        self._parts: dict[str, str] = {}  # a call's item id -> its part
        #: Calls of tools whose approval the SDK decides per call, kept until it has.
        self.held: dict[str, ResponseFunctionToolCall] = {}
        self._replayed = False  # the response streaming now is replayed from the journal

    async def through(
        self, events: AsyncGenerator[TResponseStreamEvent, None], tools: list[Tool]
    ) -> AsyncGenerator[TResponseStreamEvent, None]:
        """``events`` of a model that may call ``tools``, each written before it is passed on."""
        self._tools = tools
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                await self.write(event)
                yield event

    async def write(self, data: TResponseStreamEvent) -> None:
        ctx = self.ctx
        if isinstance(data, RetriedResponse):
            await ctx.retry(data.attempt, data.delay, data.error)
        elif isinstance(data, ResponseCreatedEvent):
            self._replayed = isinstance(data, ReplayedResponse)
            ctx.new_attempt()
        elif self._replayed:  # in the session already; calls held still wait to be placed
            if isinstance(data, ResponseOutputItemAddedEvent | ResponseOutputItemDoneEvent):
                self._hold(data.item)
        elif isinstance(data, ResponseTextDeltaEvent):
            await ctx.text(data.delta)
        elif isinstance(data, ResponseReasoningTextDeltaEvent):
            await ctx.reasoning(data.delta)
        elif isinstance(data, ResponseOutputItemAddedEvent) and isinstance(
            data.item, ResponseFunctionToolCall
        ):
            await self._open_call(data.item)
        elif isinstance(data, ResponseFunctionCallArgumentsDeltaEvent):
            part = self._parts.get(data.item_id)
            if part is not None:
                await ctx.tool_call_delta(part, data.delta)
        elif isinstance(data, ResponseOutputItemDoneEvent) and isinstance(
            data.item, ResponseFunctionToolCall
        ):
            await self._close_call(data.item)

    def _hold(self, item: ResponseOutputItem) -> None:
        """Keep a replayed call the SDK decides on per call, to be placed as it was."""
        if isinstance(item, ResponseFunctionToolCall) and self._needs_approval(item.name) is None:
            self.held[item.call_id] = item

    async def _open_call(self, call: ResponseFunctionToolCall) -> None:
        approval = self._needs_approval(call.name)
        if approval is None:
            self.held[call.call_id] = call
        else:
            part = await self.ctx.tool_call_start(call.call_id, call.name, approval=approval)
            self._parts[call.id or call.call_id] = part

    async def _close_call(self, call: ResponseFunctionToolCall) -> None:
        part = self._parts.pop(call.id or call.call_id, None)
        if part is not None:
            await self.ctx.tool_call_end(part, call.arguments or "{}")
        elif call.call_id in self.held:
            self.held[call.call_id] = call

    def _needs_approval(self, name: str) -> bool | None:
        """Whether a call of ``name`` needs approval; None: the SDK decides per call."""
        for tool in self._tools:
            if isinstance(tool, FunctionTool) and tool.name == name:
                rule = tool.needs_approval
                return rule if isinstance(rule, bool) else None
        return False


class _SessionWriter:
    """Writes what the SDK's run says besides its models' output: results, calls it decided on."""

    def __init__(self, ctx: AgentContext, mirror: _Mirror) -> None:
        self.ctx = ctx
        self.mirror = mirror
        self._answered: set[str] = set()  # calls whose result is written (refused ones)

    async def write(self, event: StreamEvent) -> None:
        if isinstance(event, RunItemStreamEvent):
            await self._run_item(event.item)

    async def _place_held(self, call_id: str, *, approval: bool) -> None:
        call = self.mirror.held.pop(call_id, None)
        if call is not None:
            await self.ctx.place_tool_call(
                call.name, call.arguments or "{}", call_id=call_id, approval=approval
            )

    async def _result(self, call_id: str, outcome: ToolOutcome) -> None:
        """Put a call's result on it, unless the log holds it already (the run continues)."""
        if call_id not in self._answered and self.ctx.recorded_outcome(call_id) is None:
            await self.ctx.tool_result(call_id, outcome)

    async def _run_item(self, item: Any) -> None:
        if isinstance(item, ToolCallOutputItem) and item.call_id:
            await self._place_held(item.call_id, approval=False)
            await self._result(item.call_id, ToolOutcome(output=_json(item.output)))
        elif isinstance(item, HandoffOutputItem):
            raw = cast(dict[str, Any], item.raw_item)
            outcome = ToolOutcome(output={"agent": item.target_agent.name})
            await self._result(str(raw.get("call_id")), outcome)

    async def decide(self, result: RunResultStreaming) -> RunState[Any]:
        """Wait for the verdicts on the calls the run stopped for; the state to resume."""
        pending = [(item, item.call_id or "") for item in result.interruptions]
        for _, call_id in pending:
            await self._place_held(call_id, approval=True)
        async with asyncio.TaskGroup() as group:
            waits = [group.create_task(self.ctx.wait_approval(cid)) for _, cid in pending]
        state = result.to_state()
        for (item, call_id), wait in zip(pending, waits, strict=True):
            verdict = wait.result()
            if verdict.approved:
                state.approve(item)
                continue
            error = refusal(verdict)
            state.reject(item, rejection_message=error)
            await self._result(call_id, ToolOutcome(error=error))
            self._answered.add(call_id)
        return state


def _json(value: Any) -> Any:
    """A tool's output as the event's value: itself when JSON can carry it, else its text."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
