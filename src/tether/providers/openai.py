"""An OpenAI-compatible upstream: OpenAI, vLLM, Ollama, OpenRouter, llama.cpp, LM Studio...

Streams ``POST {base_url}/chat/completions`` (``stream: true`` with
``stream_options.include_usage``) and maps the chunks to stream items:
``delta.content`` to TextDelta, ``delta.reasoning_content`` / ``delta.reasoning``
to ReasoningDelta, ``delta.tool_calls`` fragments (by index) to complete
ToolCallItems once the choice finishes, and the usage chunk to Usage.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tether.providers._http import (
    HTTPProvider,
    Secret,
    SSEDecoder,
    SSEEvent,
    is_transient_status,
    json_body,
    log,
    malformed,
    redact,
    status_error,
    stream_ended_early,
    token_count,
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
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    ToolSpec,
    Usage,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: What Chat Completions takes as user content parts: images, and PDFs as ``file`` parts.
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")


def to_openai_messages(messages: Iterable[ChatMessage]) -> list[dict[str, Any]]:
    """ChatMessages in the Chat Completions ``messages`` format."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any]
        if m.role == "assistant":
            # OpenAI's documented form: content null when the turn is only tool calls.
            msg = {"role": "assistant", "content": m.content or (None if m.tool_calls else "")}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in m.tool_calls
                ]
        elif m.role == "tool":
            # The format has no error flag; say it in the content the model reads.
            content = f"Error: {m.content}" if m.is_error else m.content
            msg = {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": content}
        elif m.attachments:
            parts = [_openai_attachment(a) for a in m.attachments]
            if m.content:
                parts.append({"type": "text", "text": m.content})
            msg = {"role": m.role, "content": parts}
        else:
            msg = {"role": m.role, "content": m.content}
        out.append(msg)
    return out


def _openai_attachment(a: Attachment) -> dict[str, Any]:
    """An ``image_url`` content part, or a ``file`` part with the file as a data URL."""
    url = a.url or f"data:{a.media_type};base64,{a.data}"
    if a.kind == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"file_data": url, "filename": a.name or "file"}}


def to_openai_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in tools:
        function: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
        if t.description:
            function["description"] = t.description
        out.append({"type": "function", "function": function})
    return out


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    #: How many of ``arguments`` were streamed as ToolCallDeltas.
    streamed: int = 0


class ChunkAssembler:
    """Turns ``chat.completion.chunk`` objects into stream items.

    Tool-call fragments are collected by index and emitted, complete and in
    index order, when the choice reports a finish_reason or at the end.
    """

    def __init__(self, name: str, secrets: Iterable[Secret] = ()) -> None:
        self.name = name
        self._secrets = list(secrets)
        self._calls: dict[int, _PartialCall] = {}
        self._last_index: int | None = None
        self._usage: Usage | None = None
        #: A finish_reason was seen.
        self.finished = False
        #: ``data: [DONE]`` was seen.
        self.done = False

    def feed(self, data: str) -> list[StreamItem]:
        """Items from one SSE ``data`` payload (which must not be ``[DONE]``)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed(self.name, "a chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise malformed(self.name, "a chunk is not an object")
        return self.feed_chunk(chunk)

    def feed_chunk(self, chunk: dict[str, Any]) -> list[StreamItem]:
        if chunk.get("error"):
            raise self._stream_error(chunk["error"])
        out: list[StreamItem] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningDelta(reasoning))
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    out.append(TextDelta(text))
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, dict):
                    out.extend(self._add_fragment(fragment))
            if choice.get("finish_reason"):
                self.finished = True
                out.extend(self._flush_calls())
        return out

    def finish(self) -> list[StreamItem]:
        """The items still held (tool calls, usage) once the stream has ended."""
        if not (self.done or self.finished):
            raise stream_ended_early(self.name)
        out = self._flush_calls()
        if self._usage is not None:
            out.append(self._usage)
        return out

    def _add_fragment(self, fragment: dict[str, Any]) -> list[StreamItem]:
        """Collect a fragment; stream the arguments once the call's name is known."""
        index = fragment.get("index")
        fid = fragment.get("id") or ""
        if not isinstance(index, int):
            # Servers that omit the index: a new id starts a new call.
            known = {c.id for c in self._calls.values()}
            if self._last_index is None or (fid and fid not in known):
                index = max(self._calls, default=-1) + 1
            else:
                index = self._last_index
        self._last_index = index
        call = self._calls.setdefault(index, _PartialCall())
        if fid and not call.id:
            call.id = fid
        function = fragment.get("function") or {}
        name = function.get("name")
        if isinstance(name, str) and name and not call.name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
        if not call.name or call.streamed == len(call.arguments):
            return []
        if not call.id:  # servers that send no id: ours, from the first delta on
            call.id = f"call_{uuid.uuid4().hex[:24]}"
        pending = "".join(call.arguments[call.streamed :])
        call.streamed = len(call.arguments)
        return [ToolCallDelta(call.id, call.name, pending)]

    def _flush_calls(self) -> list[StreamItem]:
        out: list[StreamItem] = []
        for index in sorted(self._calls):
            call = self._calls[index]
            call_id = call.id or f"call_{uuid.uuid4().hex[:24]}"
            arguments = "".join(call.arguments) or "{}"
            out.append(ToolCallItem(ToolCall(id=call_id, name=call.name, arguments=arguments)))
        self._calls.clear()
        self._last_index = None
        return out

    def _stream_error(self, error: Any) -> ProviderError:
        """An error reported inside the stream (OpenRouter, vLLM do this)."""
        message = "error"
        code: Any = None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "error")
            code = error.get("code")
        elif isinstance(error, str):
            message = error
        status = code if isinstance(code, int) and 400 <= code < 600 else None
        transient = is_transient_status(status) if status is not None else True
        message = redact(message, self._secrets)[:500]
        return ProviderError(
            f"{self.name}: upstream error in stream: {message}", transient=transient, status=status
        )


def _usage(usage: dict[str, Any]) -> Usage:
    """Chat Completions usage, with the cached prompt and reasoning counts when given."""
    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    return Usage(
        input_tokens=token_count(usage.get("prompt_tokens")),
        output_tokens=token_count(usage.get("completion_tokens")),
        cache_read_tokens=token_count(prompt.get("cached_tokens"))
        if isinstance(prompt, dict)
        else 0,
        reasoning_tokens=(
            token_count(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0
        ),
    )


class OpenAIProvider(HTTPProvider):
    """An OpenAI-compatible Chat Completions upstream.

    ``OpenAIProvider(base_url="http://localhost:11434/v1", models=["llama3.2"])``
    talks to Ollama; with ``api_key`` it sends ``Authorization: Bearer <key>``.
    ``extra_body`` is merged into every request body (``temperature``,
    ``max_completion_tokens``, ...); ``headers`` are sent with every request.
    """

    default_base_url = OPENAI_BASE_URL

    def __init__(
        self,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        models: Iterable[str] = (),
        name: str = "openai",
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

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key.get()}"} if self._api_key else {}

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of the Chat Completions request for ``request``.

        The request's sampling options (SAMPLING_OPTIONS only) override
        ``extra_body``; neither can change the model, messages or streaming.
        """
        options = {k: v for k, v in request.options.items() if k in SAMPLING_OPTIONS}
        if not request.tools:
            options.pop("parallel_tool_calls", None)  # OpenAI refuses it without tools
        body: dict[str, Any] = {
            **self._extra_body,
            **options,
            "model": request.model,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = to_openai_tools(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        return body

    def stream(self, request: ModelRequest) -> ItemStream:
        return self._items(request, None)

    def begin(self, request: ModelRequest) -> tuple[ItemStream, Sent | None]:
        """Like :meth:`stream`, with the request written now if a pooled connection is idle.

        Returns the stream and what was sent (None if nothing was: the stream
        then sends the request when first iterated). Whoever does not iterate
        the stream must :meth:`Sent.abort` it.
        """
        url, content, headers = self._call(request)
        sent = self._send_now(url, content, headers)
        return self._items(request, (url, content, headers, sent)), sent

    def _call(self, request: ModelRequest) -> tuple[str, bytes, dict[str, str]]:
        return (
            f"{self._base_url}{self.path}",
            json_body(self.build_body(request)),
            self._headers("text/event-stream"),
        )

    async def _items(
        self,
        request: ModelRequest,
        prepared: tuple[str, bytes, dict[str, str], Sent | None] | None,
    ) -> ItemStream:
        url, content, headers, sent = prepared or (*self._call(request), None)
        log.debug(
            "%s: POST %s model=%s messages=%d tools=%d attempt=%d",
            self.name,
            self.path,
            request.model,
            len(request.messages),
            len(request.tools),
            request.attempt,
        )
        assembler = self._assembler()
        try:
            async with self._post_stream(url, content, headers, sent) as resp:
                if resp.status_code >= 400:
                    body = await resp.aread()
                    raise status_error(
                        self.name, resp.status_code, body, self._secrets, resp.headers
                    )
                if "json" in resp.headers.get("content-type", ""):
                    # A server that ignored stream=true and answered one JSON object.
                    for item in self._from_json(await resp.aread(), assembler):
                        yield item
                    return
                decoder = SSEDecoder()
                async for raw in resp.aiter_bytes():
                    for event in decoder.feed(raw):
                        for item in self._event_items(event, assembler):
                            yield item
                for event in decoder.close():
                    for item in self._event_items(event, assembler):
                        yield item
                for item in assembler.finish():
                    yield item
        except httpx.RequestError as exc:
            raise transport_error(self.name, exc) from None

    # -- the wire: what a subclass of another format (OpenAI's Responses) replaces --

    #: The endpoint under ``base_url`` a model call is posted to.
    path = "/chat/completions"

    def _assembler(self) -> Any:
        """What turns the stream's events into items, and has :meth:`finish`."""
        return ChunkAssembler(self.name, self._secrets)

    def _event_items(self, event: SSEEvent, assembler: Any) -> list[StreamItem]:
        if event.data.strip() == "[DONE]":
            # Read on to the end of the body (it is all but over) so the
            # connection goes back to the pool instead of closing.
            assembler.done = True
            return []
        if assembler.done:
            return []
        return list(assembler.feed(event.data))

    def _from_json(self, raw: bytes, assembler: Any) -> list[StreamItem]:
        """The items of a whole JSON answer (a server that does not stream)."""
        data = self._json_object(raw)
        if data.get("error"):
            return assembler.feed_chunk(data)  # raises the in-stream error
        choices = []
        for choice in data.get("choices") or ():
            message = dict(choice.get("message") or {})
            calls = message.get("tool_calls") or []
            message["tool_calls"] = [{**c, "index": i} for i, c in enumerate(calls)]
            choices.append(
                {
                    "index": choice.get("index", 0),
                    "delta": message,
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            )
        items = assembler.feed_chunk({"choices": choices, "usage": data.get("usage")})
        assembler.done = True
        return items + assembler.finish()

    def _json_object(self, raw: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise malformed(self.name, "the response is neither SSE nor JSON") from None
        if not isinstance(data, dict):
            raise malformed(self.name, "the response is not an object")
        return data

    async def _fetch_models(self) -> list[str]:
        return await self._get_model_ids(f"{self._base_url}/models")
