"""Traces of runs, model calls and tool calls, in OpenTelemetry's GenAI conventions.

Optional: with the ``otel`` extra installed and ``OTEL_EXPORTER_OTLP_ENDPOINT``
set, :meth:`Exporter.from_environ` (called by the app at start) sends this
process's spans over OTLP/HTTP, batched, until :meth:`Exporter.aclose` flushes
them at stop. One execution of a run in this process is one tree::

    invoke_agent {agent}         the run (tether's session and run ids)
    ├── chat {model}             each model call, each attempt of it
    └── execute_tool {tool}      each server or MCP tool run, each client tool waited for

A run that is suspended, or stopped at shutdown, and later continued (here or
on another replica) is one tree per execution: they share the run id, not a
trace.

Spans carry names, ids, models, token counts, finish reasons and error types,
never content: no message text, tool arguments or results, error messages
(they may quote either), or credentials, unless ``TETHER_OTEL_CAPTURE_CONTENT=true``
turns on the conventions' content attributes.

A leaf: it imports no tether module, and imports OpenTelemetry only when
tracing is turned on. While it is off, every hook costs one attribute check
and makes no span object: :func:`traced_run` calls the run as it is,
:func:`model_call` and :func:`tool_call` hand back a shared do-nothing recorder.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

#: Where spans go (OTLP/HTTP); tracing is off unless one of them is set.
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
#: ``true``: spans also carry messages, tool arguments and results, error messages.
CAPTURE_CONTENT = "TETHER_OTEL_CAPTURE_CONTENT"
#: What a tool call is, in the conventions' ``gen_ai.tool.type``: run by the
#: server (a Python function or an MCP server's tool), or by a client.
SERVER_TOOL = "extension"
CLIENT_TOOL = "function"

P = ParamSpec("P")


class _State:
    """Whether spans are recorded (a tracer), and whether they carry content."""

    __slots__ = ("capture", "tracer")

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.capture = False


_state = _State()


def enable(provider: TracerProvider, *, capture_content: bool = False) -> None:
    """Record spans through ``provider`` from now on (the exporter's, or a test's)."""
    _state.tracer = provider.get_tracer("tether")
    _state.capture = capture_content


def disable() -> None:
    _state.tracer = None
    _state.capture = False


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _without_userinfo(url: str) -> str:
    """``url`` as it may be logged: without a ``user:password@`` part."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Exporter:
    """The SDK's tracer provider with a batching OTLP/HTTP exporter, owned by the app."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider

    @classmethod
    def from_environ(cls) -> Exporter | None:
        """Start exporting if the environment asks for it (None: tracing stays off).

        Without the ``otel`` extra this says so, once, and the server serves on.
        """
        variable = TRACES_ENDPOINT if os.environ.get(TRACES_ENDPOINT) else ENDPOINT
        endpoint = os.environ.get(variable)
        if not endpoint or _truthy(os.environ.get("OTEL_SDK_DISABLED")):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning(
                "%s is set, but the OpenTelemetry SDK is not installed: no traces are sent "
                "(install it with: pip install 'tether[otel]')",
                variable,
            )
            return None
        service = os.environ.get("OTEL_SERVICE_NAME") or "tether"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        capture = _truthy(os.environ.get(CAPTURE_CONTENT))
        enable(provider, capture_content=capture)
        log.info("tracing: sending spans to %s over OTLP/HTTP%s",
                 _without_userinfo(endpoint), " (with content)" if capture else "")  # fmt: skip
        return cls(provider)

    async def aclose(self) -> None:
        """Stop recording and send what is batched (the SDK blocks: in a thread)."""
        disable()
        await asyncio.to_thread(self._provider.shutdown)


# -- runs ------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class RunInfo:
    """What a run's span says of it from its start."""

    session_id: str
    run_id: str
    #: The session's agent (``@app.agent`` name), or None for a model's session.
    agent: str | None
    #: The session's model, for a model's session.
    model: str | None
    #: This execution continues the run from its journal.
    continued: bool = False


def traced_run(
    describe: Callable[P, RunInfo],
) -> Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, Coroutine[Any, Any, None]]]:
    """Decorate the coroutine function that executes a run: a span around each call.

    ``describe`` takes the same arguments. The span is the current one while
    the run executes, so model and tool calls become its children.
    """

    def decorate(
        execute: Callable[P, Coroutine[Any, Any, None]],
    ) -> Callable[P, Coroutine[Any, Any, None]]:
        @functools.wraps(execute)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, None]:
            tracer = _state.tracer
            if tracer is None:
                return execute(*args, **kwargs)
            # The run's coroutine is made inside the traced one: a task cancelled
            # before it starts leaves no coroutine that was never awaited.
            return _traced(tracer, describe(*args, **kwargs), execute, *args, **kwargs)

        return call

    return decorate


async def _traced(
    tracer: Tracer,
    info: RunInfo,
    execute: Callable[P, Coroutine[Any, Any, None]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> None:
    name = f"invoke_agent {info.agent}" if info.agent else "invoke_agent"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.conversation.id": info.session_id,
        "tether.session.id": info.session_id,
        "tether.run.id": info.run_id,
        "tether.run.continued": info.continued,
    }
    if info.agent:
        attributes["gen_ai.agent.name"] = info.agent
    if info.model:
        attributes["gen_ai.request.model"] = info.model
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(
        name, kind=SpanKind.INTERNAL, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            await execute(*args, **kwargs)
        except Exception as err:
            _failed(span, err)
            raise


def run_ended(
    reason: str | None,
    halted: str | None,
    error: Mapping[str, Any] | None,
    usage: Mapping[str, int],
) -> None:
    """Say how the current run's execution ended: its reason, or why it was halted.

    ``error``: the run's error event (its ``code`` and ``message``), if it failed.
    """
    if _state.tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("tether.run.end_reason", reason or f"halted:{halted}")
    _set_usage(span, usage)
    if error is not None:
        _set_error(span, str(error.get("code") or "_OTHER"), error.get("message"))


# -- model calls -------------------------------------------------------------------


class CallLike(Protocol):
    """A tool call in a message (tether.providers.base.ToolCall)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> str: ...


class MessageLike(Protocol):
    """A message sent to a model (tether.providers.base.ChatMessage)."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def tool_calls(self) -> Sequence[CallLike]: ...
    @property
    def tool_call_id(self) -> str | None: ...


class _Recorder:
    """A span being recorded as a context manager (``span`` None: tracing is off)."""

    __slots__ = ("_token", "span")

    def __init__(self, span: Span | None, current: bool = False) -> None:
        self.span = span
        self._token: object | None = None
        if span is not None and current:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(span))

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self.span
        if span is None:
            return
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]
        if isinstance(err, Exception):
            _failed(span, err)
        span.end()

    # The same, for an ``async with`` beside other asynchronous context managers.
    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(kind, err, tb)


class ModelCall(_Recorder):
    """One attempt of a model call, as a ``chat {model}`` span."""

    __slots__ = ()

    def __enter__(self) -> ModelCall:
        return self

    async def __aenter__(self) -> ModelCall:
        return self

    def finished(
        self, usage: Mapping[str, int], tool_calls: Sequence[Any], text: Sequence[str] = ()
    ) -> None:
        """The attempt streamed to its end: its usage, and whether it called tools.

        ``tool_calls``: ``[id, name, arguments]`` lists or ToolCalls; ``text``:
        the answer's pieces, joined only for content capture (empty: not known here).
        """
        span = self.span
        if span is None:
            return
        finish = "tool_calls" if tool_calls else "stop"
        span.set_attribute("gen_ai.response.finish_reasons", [finish])
        _set_usage(span, usage)
        if _state.capture:
            parts: list[dict[str, Any]] = []
            if text:
                parts.append({"type": "text", "content": "".join(text)})
            for call in tool_calls:
                call_id, name, arguments = _call_fields(call)
                parts.append({"type": "tool_call", "id": call_id, "name": name,
                              "arguments": _parsed(arguments)})  # fmt: skip
            output = [{"role": "assistant", "parts": parts, "finish_reason": finish}]
            span.set_attribute("gen_ai.output.messages", _json(output))


_MODEL_OFF = ModelCall(None)


def model_call(
    provider: str, model: str, attempt: int, messages: Sequence[MessageLike] = ()
) -> ModelCall:
    """A span for one attempt of a call of ``model`` at ``provider`` (use it as ``with``)."""
    tracer = _state.tracer
    if tracer is None:
        return _MODEL_OFF
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "tether.attempt": attempt,
    }
    if _state.capture:
        system = [{"type": "text", "content": m.content} for m in messages if m.role == "system"]
        if system:
            attributes["gen_ai.system_instructions"] = _json(system)
        attributes["gen_ai.input.messages"] = _json(
            [_message(m) for m in messages if m.role != "system"]
        )
    span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
    # Not made current: a model call streams through a generator, which the
    # current context must not follow in and out of.
    return ModelCall(span)


def _message(m: MessageLike) -> dict[str, Any]:
    """A message in the conventions' form for ``gen_ai.input.messages``."""
    parts: list[dict[str, Any]] = []
    if m.role == "tool":
        parts.append({"type": "tool_call_response", "id": m.tool_call_id, "result": m.content})
    elif m.content:
        parts.append({"type": "text", "content": m.content})
    for call in m.tool_calls:
        parts.append({"type": "tool_call", "id": call.id, "name": call.name,
                      "arguments": _parsed(call.arguments)})  # fmt: skip
    return {"role": m.role, "parts": parts}


def _call_fields(call: Any) -> tuple[str, str, str]:
    if isinstance(call, list | tuple):
        return call[0], call[1], call[2]
    return call.id, call.name, call.arguments


# -- tool calls ----------------------------------------------------------------------


class ToolCall(_Recorder):
    """One tool call, as an ``execute_tool {tool}`` span (current while it runs)."""

    __slots__ = ()

    def __enter__(self) -> ToolCall:
        return self

    def result(self, output: Any = None, error: str | None = None) -> None:
        """The call's outcome: its output, or the error a client reported."""
        span = self.span
        if span is None:
            return
        if error is not None:
            _set_error(span, "tool_error", error)
        elif _state.capture:
            span.set_attribute("gen_ai.tool.call.result", _json(output))


_TOOL_OFF = ToolCall(None)


def tool_call(name: str | None, call_id: str, kind: str, arguments: Any = None) -> ToolCall:
    """A span for tool call ``call_id`` (``kind``: SERVER_TOOL or CLIENT_TOOL; use as ``with``).

    ``name`` may be unknown (a client tool waited for by a continued run).
    """
    tracer = _state.tracer
    if tracer is None:
        return _TOOL_OFF
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": kind,
    }
    if name:
        attributes["gen_ai.tool.name"] = name
    if _state.capture and arguments is not None:
        attributes["gen_ai.tool.call.arguments"] = _json(_parsed(arguments))
    span_name = f"execute_tool {name}" if name else "execute_tool"
    span = tracer.start_span(span_name, kind=SpanKind.INTERNAL, attributes=attributes)
    return ToolCall(span, current=True)


# -- shared ----------------------------------------------------------------------------

#: A message's usage counts (tether's names) -> the conventions' attributes.
_USAGE = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_write_tokens": "gen_ai.usage.cache_creation.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
}


def _set_usage(span: Span, usage: Mapping[str, int]) -> None:
    for key, n in usage.items():
        attribute = _USAGE.get(key)
        if attribute is not None:
            span.set_attribute(attribute, n)


def _failed(span: Span, err: Exception) -> None:
    """Mark ``span`` failed by ``err``: an upstream's HTTP status, else the error's class."""
    status = getattr(err, "status", None)
    _set_error(span, str(status) if isinstance(status, int) else type(err).__name__, str(err))


def _set_error(span: Span, kind: str, message: str | None) -> None:
    """Mark ``span`` failed with error type ``kind``; the message only with content capture."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    description = f"{kind}: {message}" if _state.capture and message else kind
    span.set_status(Status(StatusCode.ERROR, description))


def _parsed(value: Any) -> Any:
    """Arguments as an object when they are JSON text (as the conventions expect)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _json(value: Any) -> str:
    """Structured content as the JSON text span attributes carry."""
    return json.dumps(value, ensure_ascii=False, default=str)


__all__ = [
    "CAPTURE_CONTENT",
    "CLIENT_TOOL",
    "ENDPOINT",
    "SERVER_TOOL",
    "Exporter",
    "ModelCall",
    "RunInfo",
    "ToolCall",
    "disable",
    "enable",
    "model_call",
    "run_ended",
    "tool_call",
    "traced_run",
]
