"""A fake OpenAI + Anthropic upstream on a real loopback socket.

It speaks both vendors' real streaming wire formats:

- ``POST /v1/chat/completions``: ``chat.completion.chunk`` objects as OpenAI
  sends them (the role delta first, ``usage: null`` on every chunk when
  ``include_usage`` is set, tool-call fragments split over chunks, a finish
  chunk, a usage chunk with empty ``choices``, then ``data: [DONE]``);
- ``POST /v1/messages``: Anthropic's ``event:``/``data:`` SSE sequence
  (message_start, ping, content blocks for thinking, text and tool_use,
  message_delta, message_stop);
- ``POST /v1/responses``: OpenAI's Responses API events as OpenAI sends them
  (``response.created``, ``response.in_progress``, an output item per
  reasoning summary, message and function call with their deltas and
  ``.done`` events, then ``response.completed`` with usage, or
  ``response.incomplete`` / ``response.failed``), each with its
  ``sequence_number``;
- ``GET /v1/models`` in either dialect (Anthropic's when the request carries
  ``anthropic-version``);
- ``POST /v1/messages/count_tokens``: Anthropic's ``{"input_tokens": N}``,
  N being :attr:`FakeUpstream.counted_tokens`.

What it streams comes from :attr:`FakeUpstream.replies` (one script per
request, in order) and then :attr:`FakeUpstream.script`. It records every
request (:attr:`FakeUpstream.requests`), can be told to fail the next N
(:meth:`FakeUpstream.fail_next`), and notices clients that hang up mid-stream
(:meth:`FakeUpstream.wait_disconnect`).

It runs as a uvicorn server task on the test's own event loop; its socket is
bound and listening before the task starts, so clients can connect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

CREATED = 1_730_000_000
T = TypeVar("T")


@dataclass
class FakeToolCall:
    name: str
    #: Complete JSON arguments; the fake streams them in small fragments.
    arguments: str
    id: str = ""


@dataclass
class Script:
    """What the fake streams for each model request."""

    text: str = "Hello from the fake upstream."
    reasoning: str = ""
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    #: (prompt / input tokens, completion / output tokens)
    usage: tuple[int, int] = (11, 7)
    #: Of the prompt: (tokens read from the cache, tokens written to it).
    cache: tuple[int, int] = (0, 0)
    #: Of the completion: reasoning tokens.
    reasoning_tokens: int = 0
    #: OpenAI-compatible servers disagree: vLLM/DeepSeek say reasoning_content,
    #: OpenRouter/Ollama say reasoning.
    reasoning_field: str = "reasoning_content"
    #: Stall after the opening event (OpenAI's role chunk, Anthropic's
    #: message_start) and this many more, until the client leaves (or the test
    #: calls :meth:`FakeUpstream.release`: the rest follows).
    hang_after: int | None = None
    #: Stall before even sending the response headers.
    stall_before_headers: bool = False
    #: End the body after the content: no finish, no usage, no [DONE]/message_stop.
    truncate: bool = False
    #: An error object sent inside the stream after the content (then the end).
    stream_error: dict[str, Any] | None = None
    #: Size of the tool-argument fragments.
    fragment: int = 5
    #: OpenAI only: ignore stream=true and answer one chat.completion JSON object
    #: (what some OpenAI-compatible servers do).
    json_reply: bool = False
    #: Responses only: end with ``response.incomplete`` for this reason
    #: (``max_output_tokens``...) after the content.
    incomplete: str | None = None
    #: Anthropic only: the signature of the thinking block (its signature_delta).
    signature: str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
    #: Anthropic only: a redacted_thinking block's data, after the thinking block.
    redacted: str = ""


@dataclass
class Received:
    method: str
    path: str
    #: Lower-case names.
    headers: dict[str, str]
    body: Any


@dataclass
class _Failure:
    status: int
    message: str | None
    headers: dict[str, str]


_OPENAI_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("invalid_request_error", "Incorrect API key provided."),
    404: ("invalid_request_error", "The model does not exist."),
    429: ("requests", "Rate limit reached for requests."),
    500: ("server_error", "The server had an error while processing your request."),
    503: ("server_error", "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


def pieces(text: str) -> list[str]:
    """Token-like pieces: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text)


def _sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_event(obj: dict[str, Any]) -> bytes:
    return b"event: " + obj["type"].encode() + b"\n" + _sse_data(obj)


class _EventStream:
    """An SSE response that notices a client hanging up while it streams.

    The body is produced in one task while another waits for
    ``http.disconnect``; a disconnect before the body is complete is recorded
    and stops the producer.
    """

    def __init__(self, fake: FakeUpstream, body: AsyncIterator[bytes], stall: bool) -> None:
        self.fake = fake
        self.body = body
        self.stall = stall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def produce() -> None:
            if self.stall:
                await self.fake._released.wait()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.ensure_future(produce())
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hung_up = watcher.done() and not producer.done()
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.body.aclose()  # type: ignore[attr-defined]
        if hung_up:
            self.fake._note_disconnect()


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by an event rather than its 0.1 s polling loop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stop_requested = asyncio.Event()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the Date / Server headers once
        await self.stop_requested.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown without its fixed 0.1 s pauses (a test suite runs it a lot)."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        # Closed connections leave the set on the next loop turns; stalled
        # streams were released by FakeUpstream.stop, so this is quick.
        deadline = asyncio.get_running_loop().time() + 2.0
        while self.server_state.connections or self.server_state.tasks:
            if asyncio.get_running_loop().time() > deadline:
                for task in self.server_state.tasks:
                    task.cancel()
                break
            await asyncio.sleep(0.002)
        for server in self.servers:
            await server.wait_closed()


class FakeUpstream:
    """The fake server. ``async with FakeUpstream() as fake: ...``"""

    def __init__(self) -> None:
        self.script = Script()
        #: Scripts for the next requests, one each, before ``script`` again
        #: (a tool loop: a step that calls tools, then one that answers).
        self.replies: deque[Script] = deque()
        self.requests: list[Received] = []
        self.models = ["gpt-4o-mini", "gpt-4o"]
        #: Anthropic's models list: this many per page (None: all in one).
        self.models_page: int | None = None
        self._arrived = asyncio.Event()
        #: What ``/v1/messages/count_tokens`` answers.
        self.counted_tokens = 1234
        self.disconnects = 0
        self._failures: deque[_Failure] = deque()
        self._disconnected = asyncio.Event()
        self._released = asyncio.Event()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # -- control -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and a vendor error body."""
        for _ in range(count):
            self._failures.append(_Failure(status, message, dict(headers or {})))

    async def wait_disconnect(self, timeout: float = 5.0) -> None:
        """Return once a client has hung up in the middle of a stream."""
        await asyncio.wait_for(self._disconnected.wait(), timeout)

    async def wait_requests(self, path: str, count: int, timeout: float = 10.0) -> None:
        """Return once ``count`` requests to ``path`` have arrived in all."""
        async with asyncio.timeout(timeout):
            while sum(r.path == path for r in self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def release(self) -> None:
        """Let every stalled stream go on (``hang_after``, ``stall_before_headers``)."""
        self._released.set()

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self._disconnected.set()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections queue in the backlog until uvicorn accepts
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        return self

    async def stop(self) -> None:
        self._released.set()  # let every stalled stream end
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.stop_requested.set()
            await self._task  # re-raises if the server failed

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- endpoints -----------------------------------------------------------

    async def _record(self, request: Request) -> Received:
        raw = await request.body()
        body = orjson.loads(raw) if raw else None
        received = Received(request.method, request.url.path, dict(request.headers), body)
        self.requests.append(received)
        self._arrived.set()
        return received

    def _openai_failure(self) -> Response | None:
        if not self._failures:
            return None
        failure = self._failures.popleft()
        kind, default = _OPENAI_ERRORS.get(failure.status, ("invalid_request_error", "Error."))
        error = {
            "message": failure.message or default,
            "type": kind,
            "param": None,
            "code": "rate_limit_exceeded" if failure.status == 429 else None,
        }
        return JSONResponse({"error": error}, failure.status, failure.headers)

    def _anthropic_failure(self) -> Response | None:
        if not self._failures:
            return None
        failure = self._failures.popleft()
        kind = _ANTHROPIC_ERRORS.get(failure.status, "invalid_request_error")
        error = {"type": kind, "message": failure.message or f"{kind} (fake)"}
        return JSONResponse(
            {"type": "error", "error": error, "request_id": f"req_fake{next(self._ids)}"},
            failure.status,
            failure.headers,
        )

    def _next_script(self) -> Script:
        return self.replies.popleft() if self.replies else self.script

    async def _chat(self, request: Request) -> Response:
        received = await self._record(request)
        if (failure := self._openai_failure()) is not None:
            return failure
        script = self._next_script()
        if script.json_reply:
            return JSONResponse(self._openai_completion(received.body, script))
        body = self._openai_chunks(received.body, script)
        return _EventStream(self, body, script.stall_before_headers)  # type: ignore[return-value]

    async def _messages(self, request: Request) -> Response:
        received = await self._record(request)
        if (failure := self._anthropic_failure()) is not None:
            return failure
        script = self._next_script()
        body = self._anthropic_events(received.body, script)
        return _EventStream(self, body, script.stall_before_headers)  # type: ignore[return-value]

    async def _responses(self, request: Request) -> Response:
        received = await self._record(request)
        if (failure := self._openai_failure()) is not None:
            return failure
        script = self._next_script()
        wire = _ResponsesWire(f"resp_fake{next(self._ids)}", received.body, script)
        if script.json_reply:
            return JSONResponse(wire.response("completed", wire.output()))
        body = self._responses_events(wire, script)
        return _EventStream(self, body, script.stall_before_headers)  # type: ignore[return-value]

    async def _count_tokens(self, request: Request) -> Response:
        await self._record(request)
        if (failure := self._anthropic_failure()) is not None:
            return failure
        return JSONResponse({"input_tokens": self.counted_tokens})

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        anthropic = "anthropic-version" in request.headers
        failure = self._anthropic_failure() if anthropic else self._openai_failure()
        if failure is not None:
            return failure
        if anthropic:
            return JSONResponse(self._anthropic_models_page(request.query_params))
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
            for m in self.models
        ]
        return JSONResponse({"object": "list", "data": data})

    def _anthropic_models_page(self, query: Any) -> dict[str, Any]:
        """One page of Anthropic's models list (``limit``, ``after_id``, ``has_more``)."""
        after = query.get("after_id")
        start = self.models.index(after) + 1 if after in self.models else 0
        size = min(int(query.get("limit", 20)), self.models_page or len(self.models) or 1)
        page = self.models[start : start + size]
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in page
        ]
        return {
            "data": data,
            "has_more": start + size < len(self.models),
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }

    # -- wire formats --------------------------------------------------------

    async def _stall(self) -> None:
        await self._released.wait()

    def _openai_completion(self, body: Any, script: Script) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": script.text, "refusal": None}
        if script.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_fake{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(script.tool_calls)
            ]
        prompt, completion = script.usage
        return {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if script.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def _openai_chunks(self, body: Any, script: Script) -> AsyncIterator[bytes]:
        chat_id = f"chatcmpl-fake{next(self._ids)}"
        model = body.get("model", "")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                obj["usage"] = None
            return _sse_data(obj)

        role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        deltas: list[dict[str, Any]] = []
        deltas += [{script.reasoning_field: p} for p in pieces(script.reasoning)]
        deltas += [{"content": p} for p in pieces(script.text)]
        for i, call in enumerate(script.tool_calls):
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call.id or f"call_fake{i}",
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            args = call.arguments
            for start in range(0, len(args), script.fragment):
                fragment = args[start : start + script.fragment]
                deltas.append({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
        if deltas and "tool_calls" in deltas[0]:
            # Like OpenAI: a tool-calls-only answer opens with role + the first call.
            deltas[0] = {**role, "content": None, **deltas[0]}
        else:
            deltas.insert(0, role)

        for n, delta in enumerate(deltas):
            if script.hang_after is not None and n == script.hang_after + 1:
                await self._stall()
            yield chunk(delta)
        if script.stream_error is not None:
            yield _sse_data({"error": script.stream_error})
            return
        if script.truncate:
            return
        yield chunk({}, "tool_calls" if script.tool_calls else "stop")
        if include_usage:
            prompt, completion = script.usage
            yield _sse_data(
                {
                    "id": chat_id,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "prompt_tokens_details": {
                            "cached_tokens": script.cache[0],
                            "audio_tokens": 0,
                        },
                        "completion_tokens_details": {
                            "reasoning_tokens": script.reasoning_tokens,
                            "audio_tokens": 0,
                            "accepted_prediction_tokens": 0,
                            "rejected_prediction_tokens": 0,
                        },
                    },
                }
            )
        yield b"data: [DONE]\n\n"

    async def _responses_events(self, wire: _ResponsesWire, script: Script) -> AsyncIterator[bytes]:
        for n, event in enumerate(wire.events()):
            if script.hang_after is not None and n == script.hang_after + 1:
                await self._stall()
            yield _sse_event(event)
        if script.stream_error is not None:
            failed = wire.response("failed", wire.output())
            failed["error"] = script.stream_error
            yield _sse_event(wire.numbered({"type": "response.failed", "response": failed}))
            return
        if script.truncate:
            return
        status = "incomplete" if script.incomplete else "completed"
        yield _sse_event(
            wire.numbered(
                {"type": f"response.{status}", "response": wire.response(status, wire.output())}
            )
        )

    async def _anthropic_events(self, body: Any, script: Script) -> AsyncIterator[bytes]:
        prompt, completion = script.usage
        events: list[dict[str, Any]] = [
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_fake{next(self._ids)}",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", ""),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        # Anthropic counts the cached parts apart from input_tokens.
                        "input_tokens": prompt - sum(script.cache),
                        "cache_creation_input_tokens": script.cache[1],
                        "cache_read_input_tokens": script.cache[0],
                        "output_tokens": 1,
                        "service_tier": "standard",
                    },
                },
            }
        ]
        content: list[dict[str, Any]] = []  # the events after message_start
        index = 0

        def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
            nonlocal index
            content.append({"type": "content_block_start", "index": index, "content_block": start})
            if index == 0:
                content.append({"type": "ping"})
            content.extend(
                {"type": "content_block_delta", "index": index, "delta": d} for d in deltas
            )
            content.append({"type": "content_block_stop", "index": index})
            index += 1

        if script.reasoning:
            block(
                {"type": "thinking", "thinking": "", "signature": ""},
                [{"type": "thinking_delta", "thinking": p} for p in pieces(script.reasoning)]
                + [{"type": "signature_delta", "signature": script.signature}],
            )
        if script.redacted:
            block({"type": "redacted_thinking", "data": script.redacted}, [])
        if script.text:
            block(
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in pieces(script.text)],
            )
        for i, call in enumerate(script.tool_calls):
            args = call.arguments
            fragments = [""] + [
                args[s : s + script.fragment] for s in range(0, len(args), script.fragment)
            ]
            block(
                {
                    "type": "tool_use",
                    "id": call.id or f"toolu_fake{i}",
                    "name": call.name,
                    "input": {},
                },
                [{"type": "input_json_delta", "partial_json": f} for f in fragments],
            )

        for n, event in enumerate(events + content):
            if script.hang_after is not None and n == script.hang_after + 1:
                await self._stall()
            yield _sse_event(event)
        if script.stream_error is not None:
            yield _sse_event({"type": "error", "error": script.stream_error})
            return
        if script.truncate:
            return
        yield _sse_event(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if script.tool_calls else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": completion},
            }
        )
        yield _sse_event({"type": "message_stop"})


class FakeUpstreamThread:
    """A FakeUpstream served by an event loop on a thread of its own (for synchronous tests).

    ``with FakeUpstreamThread() as fake: ...``; :meth:`run` runs one of the
    fake's coroutines (``wait_requests``...) on its loop and returns its result.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        self.fake = self.run(FakeUpstream().start())
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.run(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class _ResponsesWire:
    """One Responses API answer to a script: its output items and its stream of events."""

    def __init__(self, response_id: str, body: Any, script: Script) -> None:
        self.id = response_id
        self.body = body
        self.script = script
        self._sequence = itertools.count()

    def numbered(self, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "sequence_number": next(self._sequence)}

    def output(self) -> list[dict[str, Any]]:
        """The output items, complete: reasoning (its summary), message, function calls."""
        script = self.script
        items: list[dict[str, Any]] = []
        if script.reasoning:
            items.append(
                {
                    "type": "reasoning",
                    "id": f"rs_{self.id}",
                    "summary": [{"type": "summary_text", "text": script.reasoning}],
                }
            )
        if script.text:
            items.append(
                {
                    "type": "message",
                    "id": f"msg_{self.id}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": script.text, "annotations": []}],
                }
            )
        items += [
            {
                "type": "function_call",
                "id": f"fc_{self.id}_{i}",
                "call_id": call.id or f"call_fake{i}",
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
            for i, call in enumerate(script.tool_calls)
        ]
        return items

    def response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The response object as the created/completed/incomplete/failed events carry it."""
        script = self.script
        prompt, completion = script.usage
        done = status != "in_progress"
        return {
            "id": self.id,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": self.body.get("model", ""),
            "output": output,
            "error": None,
            "incomplete_details": (
                {"reason": script.incomplete} if status == "incomplete" else None
            ),
            "usage": (
                {
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": script.cache[0]},
                    "output_tokens": completion,
                    "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
                    "total_tokens": prompt + completion,
                }
                if done
                else None
            ),
        }

    def events(self) -> list[dict[str, Any]]:
        """The events before the last one, in the order OpenAI streams them."""
        out = [
            {"type": "response.created", "response": self.response("in_progress", [])},
            {"type": "response.in_progress", "response": self.response("in_progress", [])},
        ]
        for index, item in enumerate(self.output()):
            out += self._item_events(index, item)
        return [self.numbered(e) for e in out]

    def _item_events(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        at = {"output_index": index, "item_id": item["id"]}
        kind = item["type"]
        opened = {**item, "status": "in_progress"}
        if kind == "reasoning":
            opened["summary"] = []
            text = item["summary"][0]["text"]
            part = {"type": "summary_text", "text": ""}
            middle = [
                {"type": "response.reasoning_summary_part.added", **at, "summary_index": 0,
                 "part": part},
                *({"type": "response.reasoning_summary_text.delta", **at, "summary_index": 0,
                   "delta": p} for p in pieces(text)),
                {"type": "response.reasoning_summary_text.done", **at, "summary_index": 0,
                 "text": text},
                {"type": "response.reasoning_summary_part.done", **at, "summary_index": 0,
                 "part": {**part, "text": text}},
            ]  # fmt: skip
        elif kind == "message":
            opened["content"] = []
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            middle = [
                {"type": "response.content_part.added", **at, "content_index": 0, "part": part},
                *({"type": "response.output_text.delta", **at, "content_index": 0, "delta": p}
                  for p in pieces(text)),
                {"type": "response.output_text.done", **at, "content_index": 0, "text": text},
                {"type": "response.content_part.done", **at, "content_index": 0,
                 "part": {**part, "text": text}},
            ]  # fmt: skip
        else:
            opened["arguments"] = ""
            args, size = item["arguments"], self.script.fragment
            middle = [
                *({"type": "response.function_call_arguments.delta", **at,
                   "delta": args[s : s + size]} for s in range(0, len(args), size)),
                {"type": "response.function_call_arguments.done", **at, "arguments": args},
            ]  # fmt: skip
        return [
            {"type": "response.output_item.added", "output_index": index, "item": opened},
            *middle,
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
