"""Anthropic's Messages API, streamed.

``POST {base_url}/v1/messages`` with ``stream: true``; the SSE events map to
stream items: ``text_delta`` to TextDelta, ``thinking_delta`` to
ReasoningDelta, ``signature_delta`` to ReasoningSignature, a
``redacted_thinking`` block to RedactedReasoning, a ``tool_use`` block (its
``input_json_delta`` pieces joined) to one ToolCallItem when the block stops,
and the usage of ``message_start`` (input) and ``message_delta`` (output) to
one Usage at ``message_stop``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tether.providers._http import (
    HTTPProvider,
    Secret,
    is_transient_status,
    iter_sse,
    json_body,
    json_event,
    log,
    malformed,
    redact,
    status_error,
    stream_ended_early,
    transport_error,
)
from tether.providers._transport import Sent
from tether.providers.base import (
    SAMPLING_OPTIONS,
    Attachment,
    ChatMessage,
    ItemStream,
    ModelRequest,
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

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
#: What the Messages API takes in user turns: images, PDFs and plain text documents.
MEDIA_TYPES = (
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain",
)  # fmt: skip
#: The Messages API requires max_tokens; every Claude model accepts this much.
DEFAULT_MAX_TOKENS = 4096

#: The status each documented error type comes with, for errors inside a stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object ``tool_use.input`` must be."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def to_anthropic_messages(
    messages: Iterable[ChatMessage],
) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)`` for the Messages API.

    System messages are joined into the top-level ``system``; tool results
    become ``tool_result`` blocks of a user turn; consecutive turns of one role
    are merged (tool results first, as the API requires); empty turns dropped.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        if m.role == "system":
            if m.content:
                system.append(m.content)
        elif m.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.content,
            }
            if m.is_error:
                block["is_error"] = True
            add("user", [block])
        else:
            blocks: list[dict[str, Any]] = [_anthropic_attachment(a) for a in m.attachments]
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            if m.role == "assistant":
                blocks.extend(
                    {
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": _tool_input(c.arguments),
                    }
                    for c in m.tool_calls
                )
            add("assistant" if m.role == "assistant" else "user", blocks)
    return ("\n\n".join(system) or None), out


def _anthropic_attachment(a: Attachment) -> dict[str, Any]:
    """An ``image`` block, or a ``document`` block (PDF as base64, plain text as text)."""
    source: dict[str, Any]
    if a.url:
        source = {"type": "url", "url": a.url}
    elif a.media_type == "text/plain":
        text = base64.b64decode(a.data).decode("utf-8", "replace")
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        source = {"type": "base64", "media_type": a.media_type, "data": a.data}
    if a.kind == "image":
        return {"type": "image", "source": source}
    block: dict[str, Any] = {"type": "document", "source": source}
    if a.name:
        block["title"] = a.name
    return block


def to_anthropic_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in tools:
        tool: dict[str, Any] = {"name": t.name, "input_schema": t.parameters}
        if t.description:
            tool["description"] = t.description
        out.append(tool)
    return out


def to_anthropic_tool_choice(
    tool_choice: str | dict[str, Any] | None, parallel: bool | None = None
) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` (and ``parallel_tool_calls``) as Anthropic's ``tool_choice``.

    ``auto`` -> ``auto``, ``none`` -> ``none``, ``required`` -> ``any``, a named
    function -> ``tool``; ``parallel_tool_calls: false`` sets
    ``disable_parallel_tool_use``. None when there is nothing to say.
    """
    choice: dict[str, Any] | None = None
    if tool_choice in ("auto", "none"):
        choice = {"type": tool_choice}
    elif tool_choice == "required":
        choice = {"type": "any"}
    elif isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            choice = {"type": "tool", "name": name}
    if parallel is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return choice


def to_anthropic_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling options the Messages API has, in its names.

    ``max_completion_tokens`` (or ``max_tokens``) -> ``max_tokens``, ``stop`` ->
    ``stop_sequences``; ``temperature`` and ``top_p`` as they are. Options it
    has no equivalent for (seed, penalties, response_format, reasoning_effort)
    are dropped; ``parallel_tool_calls`` goes into ``tool_choice``.
    """
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        if options.get(key) is not None:
            out[key] = options[key]
    max_tokens = options.get("max_completion_tokens", options.get("max_tokens"))
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    stop = options.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    return out


@dataclass(slots=True)
class _ToolBlock:
    id: str
    name: str
    initial: Any
    parts: list[str] = field(default_factory=list)

    def call(self) -> ToolCall:
        arguments = "".join(self.parts)
        if not arguments:
            arguments = orjson.dumps(self.initial).decode() if self.initial else "{}"
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


class EventAssembler:
    """Turns Messages API stream events into stream items."""

    def __init__(self, name: str, secrets: Iterable[Secret] = ()) -> None:
        self.name = name
        self._secrets = list(secrets)
        self._tools: dict[int, _ToolBlock] = {}
        #: The three input counts of the latest report (their sum is the prompt).
        self._input: dict[str, int] = {}
        self._output_tokens = 0
        #: ``message_stop`` was seen.
        self.stopped = False

    def feed(self, data: str) -> list[StreamItem]:
        return self.feed_event(json_event(self.name, data))

    def feed_event(self, event: dict[str, Any]) -> list[StreamItem]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_stop":
            tool = self._tools.pop(event.get("index", -1), None)
            return [ToolCallItem(tool.call())] if tool is not None else []
        if kind == "message_start":
            self._usage((event.get("message") or {}).get("usage"))
            return []
        if kind == "message_delta":
            self._usage(event.get("usage"))
            return []
        if kind == "message_stop":
            self.stopped = True
            return []
        if kind == "error":
            raise self._stream_error(event.get("error"))
        return []  # ping, and event types added after this was written

    def _block_delta(self, event: dict[str, Any]) -> list[StreamItem]:
        delta = event.get("delta") or {}
        dtype = delta.get("type")
        if dtype == "text_delta" and delta.get("text"):
            return [TextDelta(delta["text"])]
        if dtype == "thinking_delta" and delta.get("thinking"):
            return [ReasoningDelta(delta["thinking"])]
        if dtype == "input_json_delta":
            block = self._tools.get(event.get("index", -1))
            piece = delta.get("partial_json")
            if block is not None and isinstance(piece, str) and piece:
                block.parts.append(piece)
                return [ToolCallDelta(block.id, block.name, piece)]
        if dtype == "signature_delta" and delta.get("signature"):
            return [ReasoningSignature(delta["signature"])]
        return []  # citations_delta...

    def _block_start(self, event: dict[str, Any]) -> list[StreamItem]:
        started = event.get("content_block") or {}
        btype = started.get("type")
        if btype == "tool_use":
            self._tools[event.get("index", -1)] = _ToolBlock(
                id=str(started.get("id") or ""),
                name=str(started.get("name") or ""),
                initial=started.get("input"),
            )
        elif btype == "text" and started.get("text"):
            return [TextDelta(started["text"])]
        elif btype == "thinking" and started.get("thinking"):
            return [ReasoningDelta(started["thinking"])]
        elif btype == "redacted_thinking" and started.get("data"):
            return [RedactedReasoning(started["data"])]
        return []

    def finish(self) -> list[StreamItem]:
        if not self.stopped:
            raise stream_ended_early(self.name)
        return [
            Usage(
                sum(self._input.values()),
                self._output_tokens,
                cache_read_tokens=self._input.get("cache_read_input_tokens", 0),
                cache_write_tokens=self._input.get("cache_creation_input_tokens", 0),
            )
        ]

    def _usage(self, usage: Any) -> None:
        """Usage counts are cumulative: a later report replaces an earlier one."""
        if not isinstance(usage, dict):
            return
        keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        if any(isinstance(usage.get(k), int) for k in keys):
            self._input = {k: usage[k] for k in keys if isinstance(usage.get(k), int)}
        if isinstance(usage.get("output_tokens"), int):
            self._output_tokens = usage["output_tokens"]

    def _stream_error(self, error: Any) -> ProviderError:
        kind = "error"
        message = ""
        if isinstance(error, dict):
            kind = str(error.get("type") or "error")
            message = str(error.get("message") or "")
        status = _ERROR_STATUS.get(kind)
        transient = True if status is None else is_transient_status(status)
        text = redact(f"{kind}: {message}" if message else kind, self._secrets)[:500]
        return ProviderError(
            f"{self.name}: upstream error in stream: {text}", transient=transient, status=status
        )


class AnthropicProvider(HTTPProvider):
    """Claude models through the Messages API.

    ``extra_body`` is merged into every request body (``temperature``,
    ``max_tokens``, ``thinking``...); ``max_tokens`` defaults to 4096.
    """

    default_base_url = ANTHROPIC_BASE_URL

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str = ANTHROPIC_BASE_URL,
        models: Iterable[str] = (),
        name: str = "anthropic",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout: float | httpx.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            name=name,
            base_url=base_url,
            api_key=api_key,
            models=models,
            timeout=timeout,
            headers=headers,
            extra_body=extra_body,
            client=client,
        )
        self.max_tokens = max_tokens

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key.get()
        return headers

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of the Messages request for ``request``.

        A request with a ``native`` Messages body (the Messages front's, already
        sanitised) is sent as that body: thinking blocks keep their signatures
        and blocks their ``cache_control``; the model is the provider's name for it.
        """
        if request.native is not None:
            return {**self._extra_body, **request.native, "model": request.model, "stream": True}
        system, messages = to_anthropic_messages(request.messages)
        options = {k: v for k, v in request.options.items() if k in SAMPLING_OPTIONS}
        body: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            **self._extra_body,
            **to_anthropic_options(options),
            "model": request.model,
            "messages": messages,
            "stream": True,
        }
        if system is not None:
            body["system"] = system
        if request.tools:
            body["tools"] = to_anthropic_tools(request.tools)
            choice = to_anthropic_tool_choice(
                request.tool_choice, options.get("parallel_tool_calls")
            )
            if choice is not None:
                body["tool_choice"] = choice
        return body

    def begin(self, request: ModelRequest) -> tuple[ItemStream, Sent | None]:
        """Like :meth:`stream`, with the request written now if a pooled connection is idle.

        Returns the stream and what was sent (None if nothing was: the stream
        then sends the request when first iterated). Whoever does not iterate
        the stream must abort what was sent.
        """
        content = json_body(self.build_body(request))
        headers = self._headers("text/event-stream")
        sent = self._send_now(self._messages_url, content, headers)
        return self._items(request, content, headers, sent), sent

    def stream(self, request: ModelRequest) -> ItemStream:
        content = json_body(self.build_body(request))
        return self._items(request, content, self._headers("text/event-stream"), None)

    @property
    def _messages_url(self) -> str:
        return f"{self._base_url}/v1/messages"

    async def _items(
        self, request: ModelRequest, content: bytes, headers: dict[str, str], sent: Sent | None
    ) -> ItemStream:
        url = self._messages_url
        log.debug(
            "%s: POST /v1/messages model=%s messages=%d tools=%d attempt=%d",
            self.name,
            request.model,
            len(request.messages),
            len(request.tools),
            request.attempt,
        )
        assembler = EventAssembler(self.name, self._secrets)
        try:
            async with self._post_stream(url, content, headers, sent) as resp:
                if resp.status_code >= 400:
                    body = await resp.aread()
                    raise status_error(
                        self.name, resp.status_code, body, self._secrets, resp.headers
                    )
                async for event in iter_sse(resp.aiter_lines()):
                    # After message_stop, read on to the end of the body (it is
                    # all but over) so that the connection goes back to the pool
                    # for the next request, which a prefetch writes at once.
                    if not assembler.stopped:
                        for item in assembler.feed(event.data):
                            yield item
                for item in assembler.finish():
                    yield item
        except httpx.RequestError as exc:
            raise transport_error(self.name, exc) from None

    async def count_tokens(self, body: Mapping[str, Any]) -> int:
        """The upstream's exact count of a Messages request's input tokens.

        ``body`` holds the counted fields (model, messages, system, tools,
        tool_choice, thinking), in Anthropic's format.
        """
        url = f"{self._base_url}/v1/messages/count_tokens"
        try:
            resp = await self._client.post(url, content=json_body(body), headers=self._headers())
        except httpx.RequestError as exc:
            raise transport_error(self.name, exc) from None
        if resp.status_code >= 400:
            raise status_error(
                self.name, resp.status_code, resp.content, self._secrets, resp.headers
            )
        try:
            count = orjson.loads(resp.content)["input_tokens"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            count = None
        if not isinstance(count, int):
            raise malformed(self.name, "count_tokens did not answer an input_tokens count")
        return count

    async def _fetch_models(self) -> list[str]:
        return await self._get_model_ids(f"{self._base_url}/v1/models?limit=1000")
