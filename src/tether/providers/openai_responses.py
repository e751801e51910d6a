"""An OpenAI Responses-wire upstream: ``POST {base_url}/responses`` with ``stream: true``.

Why a second OpenAI provider: OpenAI's newer models and features (reasoning
summaries, the models only served there) are reached through the Responses API,
and more servers speak it. The request is stateless (``store: false``: tether's
log is the conversation), built from the ChatMessages: system messages become
``instructions``, the rest ``input`` items (messages, ``function_call`` and
``function_call_output``). The typed SSE events become stream items:
``response.output_text.delta`` TextDelta, ``response.reasoning_summary_text.delta``
and ``response.reasoning_text.delta`` ReasoningDelta, function-call items
ToolCallDelta pieces and a ToolCallItem, ``response.completed`` Usage;
``response.failed`` and ``error`` events raise the classified ProviderError,
and ``response.incomplete`` ends the stream with what came (its reason logged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.providers._http import (
    Secret,
    SSEEvent,
    is_transient_status,
    json_event,
    log,
    redact,
    stream_ended_early,
    token_count,
)
from tether.providers.base import (
    SAMPLING_OPTIONS,
    Attachment,
    ChatMessage,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    ToolSpec,
    Usage,
    classified,
)
from tether.providers.openai import OpenAIProvider

#: Sampling options the Responses API takes under the same name.
_SAME_NAME = ("temperature", "top_p", "parallel_tool_calls")
#: The ``code`` of an error in the stream -> the HTTP status it stands for.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "invalid_prompt": 400,
    "context_length_exceeded": 400,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
}


def to_responses_input(messages: Iterable[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """``(instructions, input items)``: the system messages' text, and the rest as items."""
    system: list[str] = []
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.role == "tool":
            # The format has no error flag; say it in the output the model reads.
            output = f"Error: {m.content}" if m.is_error else m.content
            items.append(
                {"type": "function_call_output", "call_id": m.tool_call_id or "", "output": output}
            )
        elif m.role == "assistant":
            if m.content or not m.tool_calls:
                items.append({"type": "message", "role": "assistant", "content": m.content})
            items += [
                {
                    "type": "function_call",
                    "call_id": c.id,
                    "name": c.name,
                    "arguments": c.arguments or "{}",
                }
                for c in m.tool_calls
            ]
        elif m.attachments:
            parts = [_input_attachment(a) for a in m.attachments]
            if m.content:
                parts.append({"type": "input_text", "text": m.content})
            items.append({"type": "message", "role": m.role, "content": parts})
        else:
            items.append({"type": "message", "role": m.role, "content": m.content})
    return ("\n\n".join(system) if system else None), items


def _input_attachment(a: Attachment) -> dict[str, Any]:
    """An ``input_image`` part, or an ``input_file`` part with the file as a data URL."""
    url = a.url or f"data:{a.media_type};base64,{a.data}"
    if a.kind == "image":
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    return {"type": "input_file", "file_data": url, "filename": a.name or "file"}


def to_responses_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Function tools in the Responses form (flat: no nested ``function`` object)."""
    out: list[dict[str, Any]] = []
    for t in tools:
        tool: dict[str, Any] = {"type": "function", "name": t.name, "parameters": t.parameters}
        if t.description:
            tool["description"] = t.description
        out.append(tool)
    return out


def to_responses_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """Chat's ``{"type": "function", "function": {"name"}}`` as ``{"type": "function", "name"}``."""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "function", "name": choice["function"].get("name")}
    return choice


def to_responses_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling options (Chat Completions' names) the Responses API has, in its form.

    ``max_completion_tokens`` (or ``max_tokens``) -> ``max_output_tokens``,
    ``reasoning_effort`` -> ``reasoning.effort``, ``response_format`` ->
    ``text.format``; ``stop``, ``seed`` and the penalties have no equivalent
    there and are dropped.
    """
    out = {k: options[k] for k in _SAME_NAME if k in options}
    max_tokens = options.get("max_completion_tokens", options.get("max_tokens"))
    if max_tokens is not None:
        out["max_output_tokens"] = max_tokens
    if options.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": options["reasoning_effort"]}
    fmt = options.get("response_format")
    if isinstance(fmt, dict):
        schema = fmt.get("json_schema")
        if fmt.get("type") == "json_schema" and isinstance(schema, dict):
            out["text"] = {"format": {"type": "json_schema", **schema}}
        else:
            out["text"] = {"format": fmt}
    return out


@dataclass(slots=True)
class _Call:
    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)


class ResponsesAssembler:
    """Turns Responses API stream events into stream items (I/O-free)."""

    def __init__(self, name: str, secrets: Iterable[Secret] = ()) -> None:
        self.name = name
        self._secrets = list(secrets)
        #: Function calls in progress, by output index.
        self._calls: dict[int, _Call] = {}
        #: Output indexes whose text or reasoning came as deltas.
        self._streamed: set[int] = set()
        self._usage: Usage | None = None
        #: ``response.completed`` or ``response.incomplete`` was seen.
        self.ended = False
        #: Why the response is incomplete (``max_output_tokens``...), if it is.
        self.incomplete: str | None = None

    def feed(self, data: str) -> list[StreamItem]:
        return self.feed_event(json_event(self.name, data))

    def feed_event(self, event: dict[str, Any]) -> list[StreamItem]:
        kind = event.get("type")
        delta = event.get("delta")
        index = event.get("output_index", -1)
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            self._streamed.add(index)
            return [TextDelta(delta)] if isinstance(delta, str) and delta else []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self._streamed.add(index)
            return [ReasoningDelta(delta)] if isinstance(delta, str) and delta else []
        if kind == "response.reasoning_summary_part.added" and event.get("summary_index", 0):
            return [ReasoningDelta("\n\n")]  # between the parts of a summary
        if kind == "response.function_call_arguments.delta":
            call = self._calls.get(index)
            if call is None or not isinstance(delta, str) or not delta:
                return []
            call.pieces.append(delta)
            return [ToolCallDelta(call.call_id, call.name, delta)]
        if kind == "response.output_item.added":
            self._item_added(index, event.get("item"))
            return []
        if kind == "response.output_item.done":
            return self._item_done(index, event.get("item"))
        if kind in ("response.completed", "response.incomplete"):
            self._ended(event.get("response"))
            return []
        if kind == "response.failed":
            response = event.get("response")
            raise self._stream_error(response.get("error") if isinstance(response, dict) else None)
        if kind == "error":
            raise self._stream_error(event)
        return []  # created, in_progress, the .done events, and types added since

    def finish(self) -> list[StreamItem]:
        """The usage, once the stream has ended; what is incomplete is logged with its reason."""
        if not self.ended:
            raise stream_ended_early(self.name)
        if self.incomplete is not None:
            log.info("%s: the upstream's response is incomplete (%s)", self.name, self.incomplete)
        return [self._usage] if self._usage is not None else []

    def _item_added(self, index: int, item: Any) -> None:
        if isinstance(item, dict) and item.get("type") == "function_call":
            call_id = str(item.get("call_id") or item.get("id") or "")
            self._calls[index] = _Call(call_id, str(item.get("name") or ""))

    def _item_done(self, index: int, item: Any) -> list[StreamItem]:
        """A finished call as a ToolCallItem; a message or reasoning that came whole, its text."""
        if not isinstance(item, dict):
            return []
        kind = item.get("type")
        if kind == "function_call":
            call = self._calls.pop(index, None) or _Call(str(item.get("call_id") or ""), "")
            arguments = item.get("arguments")
            if not isinstance(arguments, str) or not arguments:
                arguments = "".join(call.pieces) or "{}"
            name = str(item.get("name") or call.name)
            return [ToolCallItem(ToolCall(id=call.call_id, name=name, arguments=arguments))]
        if index in self._streamed:
            return []
        if kind == "message":
            texts = [
                p.get("text") or p.get("refusal")
                for p in item.get("content") or ()
                if isinstance(p, dict)
            ]
            return [TextDelta(t) for t in texts if isinstance(t, str) and t]
        if kind == "reasoning":
            texts = [p.get("text") for p in item.get("summary") or () if isinstance(p, dict)]
            joined = "\n\n".join(t for t in texts if isinstance(t, str) and t)
            return [ReasoningDelta(joined)] if joined else []
        return []

    def _ended(self, response: Any) -> None:
        self.ended = True
        if not isinstance(response, dict):
            return
        details = response.get("incomplete_details")
        if response.get("status") == "incomplete" or isinstance(details, dict):
            reason = details.get("reason") if isinstance(details, dict) else None
            self.incomplete = str(reason or "unknown reason")
        usage = response.get("usage")
        if isinstance(usage, dict):
            self._usage = _usage(usage)

    def _stream_error(self, error: Any) -> ProviderError:
        code: Any = None
        message = "error"
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            message = str(error.get("message") or code or "error")
        status = _ERROR_STATUS.get(str(code)) if code else None
        transient = code != "insufficient_quota" and (status is None or is_transient_status(status))
        text = redact(f"{code}: {message}" if code else message, self._secrets)[:500]
        err = ProviderError(
            f"{self.name}: upstream error in stream: {text}", transient=transient, status=status
        )
        return classified(err)


def _usage(usage: dict[str, Any]) -> Usage:
    """Responses usage, with the cached input and reasoning counts when given."""
    given = usage.get("input_tokens_details")
    made = usage.get("output_tokens_details")
    return Usage(
        input_tokens=token_count(usage.get("input_tokens")),
        output_tokens=token_count(usage.get("output_tokens")),
        cache_read_tokens=token_count(given.get("cached_tokens")) if isinstance(given, dict) else 0,
        reasoning_tokens=token_count(made.get("reasoning_tokens")) if isinstance(made, dict) else 0,
    )


class OpenAIResponsesProvider(OpenAIProvider):
    """An upstream of OpenAI's Responses API (``kind = "openai-responses"``).

    Everything but the wire is the OpenAI provider's: the key as ``Authorization:
    Bearer``, ``GET /models`` for discovery, the pooled connections and the
    request written ahead (:meth:`begin`), the media types. ``extra_body`` is
    merged into every request body (``reasoning: {summary: "auto"}``, ...).
    """

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of the Responses request for ``request``.

        The request's sampling options (SAMPLING_OPTIONS only, in the Responses
        form) override ``extra_body``; neither can change the model, input,
        streaming or ``store``.
        """
        options = {k: v for k, v in request.options.items() if k in SAMPLING_OPTIONS}
        if not request.tools:
            options.pop("parallel_tool_calls", None)
        instructions, items = to_responses_input(request.messages)
        body: dict[str, Any] = {
            **self._extra_body,
            **to_responses_options(options),
            "model": request.model,
            "input": items,
            "stream": True,
            "store": False,
        }
        if instructions is not None:
            body["instructions"] = instructions
        if request.tools:
            body["tools"] = to_responses_tools(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = to_responses_tool_choice(request.tool_choice)
        return body

    path = "/responses"

    def _assembler(self) -> Any:
        return ResponsesAssembler(self.name, self._secrets)

    def _event_items(self, event: SSEEvent, assembler: Any) -> list[StreamItem]:
        return list(assembler.feed(event.data))

    def _from_json(self, raw: bytes, assembler: Any) -> list[StreamItem]:
        """A whole response object, fed as the events that would have streamed it."""
        data = self._json_object(raw)
        if data.get("error"):
            assembler.feed_event({"type": "response.failed", "response": data})
        items: list[StreamItem] = []
        for index, item in enumerate(data.get("output") or ()):
            added = {"type": "response.output_item.added", "output_index": index, "item": item}
            items += assembler.feed_event(added)
            done = {"type": "response.output_item.done", "output_index": index, "item": item}
            items += assembler.feed_event(done)
        assembler.feed_event({"type": "response.completed", "response": data})
        return items + assembler.finish()
