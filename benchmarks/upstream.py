"""A fast local OpenAI-compatible upstream for benchmarks/bench_gateway.py.

A raw asyncio HTTP/1.1 server (keep-alive, no framework) that answers
``POST /v1/chat/completions`` with ``stream: true`` the way OpenAI does: the
headers at once, a role chunk, then ``--tokens`` content chunks, the first
``--ttft-ms`` after the request and each next one ``--gap-ms`` after the one
before (on a fixed schedule from the request's arrival, so the upstream's own
jitter does not accumulate), then a finish chunk, a usage chunk when
``stream_options.include_usage`` is set, and ``data: [DONE]``; every chunk is
one ``chat.completion.chunk`` object in one HTTP chunk. Without ``stream`` it
answers one ``chat.completion`` object after the same total time. Streamed
token ``i`` is the text ``" t{i}@{ns}"``, where ``ns`` is ``time.monotonic_ns()``
just before the chunk is written (CLOCK_MONOTONIC, shared by every process on
the machine), so a client can check that it got every token, in order, exactly
once, and how long each took to reach it. ``GET /v1/models`` lists ``--model`` and ``GET /health``
answers 200.

The same streamed text answer, on the same schedule, comes in OpenAI's
Responses format from ``POST /v1/responses`` (``response.created`` ...
``response.output_text.delta`` per token ... ``response.completed``) and in
Anthropic's Messages format from ``POST /v1/messages`` (``message_start`` ...
a ``text_delta`` per token ... ``message_stop``): a gateway's front can be
measured against an upstream speaking the same API.

A streamed request that offers ``tools`` is answered with a call of its first
tool while its messages hold fewer than ``--tool-steps`` tool results (so a
tool loop takes ``--tool-steps`` calls and a text answer, whoever runs it): the
call's id and name in the first chunk, its arguments ``{"step": k,
"arrived_ns": ns}`` (``k`` = this call's number from 1, ``ns`` = the request's
arrival, CLOCK_MONOTONIC) in up to ``--tokens`` fragments on the same schedule
as content tokens, then ``finish_reason: "tool_calls"``, as OpenAI streams them.

It binds 127.0.0.1 only and prints ``READY http://127.0.0.1:PORT pid=PID``
once listening. It exits on SIGTERM / SIGINT, or when its standard input
closes with ``--exit-on-stdin-close`` (so that it does not outlive a benchmark
killed with SIGKILL).

    .venv/bin/python benchmarks/upstream.py --port 0 --tokens 50 --gap-ms 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

HOST = "127.0.0.1"
CREATED = 1_730_000_000
_MAX_HEAD = 64 * 1024
_MAX_BODY = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    tokens: int
    ttft_s: float
    gap_s: float
    models: tuple[str, ...]
    #: Tool calls a conversation gets before the text answer, when it offers tools.
    tool_steps: int = 9


class BadRequest(Exception):
    pass


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _sse(obj: Any) -> bytes:
    return _chunked(b"data: " + orjson.dumps(obj) + b"\n\n")


def _event(obj: dict[str, Any]) -> bytes:
    """One typed SSE event (``event:`` + ``data:``) in one HTTP chunk."""
    return _chunked(b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n")


@dataclass(slots=True)
class _Wire:
    """A typed-event streaming format: its opening events, a token's, its closing ones."""

    opening: list[dict[str, Any]]
    #: A token's text -> its event.
    token: Callable[[str], dict[str, Any]]
    #: The answer's output tokens -> the closing events.
    closing: Callable[[int], list[dict[str, Any]]]


def _responses_wire(model: str, ids: Iterator[int]) -> _Wire:
    """OpenAI's Responses stream of a text answer (sequence numbers in order)."""
    rid, mid = f"resp_bench{next(ids)}", f"msg_bench{next(ids)}"
    seq = itertools.count()
    response = {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "model": model,
        "status": "in_progress",
        "output": [],
    }
    item = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }

    def ev(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(seq), **fields}

    def closing(tokens: int) -> list[dict[str, Any]]:
        usage = {"input_tokens": 10, "output_tokens": tokens, "total_tokens": 10 + tokens}
        return [
            ev("response.output_item.done", output_index=0, item={**item, "status": "completed"}),
            ev("response.completed", response={**response, "status": "completed", "usage": usage}),
        ]

    return _Wire(
        [
            ev("response.created", response=response),
            ev("response.in_progress", response=response),
            ev("response.output_item.added", output_index=0, item=item),
            ev(
                "response.content_part.added",
                item_id=mid,
                output_index=0,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ],
        lambda text: ev(
            "response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=text
        ),
        closing,
    )


def _messages_wire(model: str, ids: Iterator[int]) -> _Wire:
    """Anthropic's Messages stream of a text answer."""
    message = {
        "id": f"msg_bench{next(ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    return _Wire(
        [
            {"type": "message_start", "message": message},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ],
        lambda text: {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        },
        lambda tokens: [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": tokens},
            },
            {"type": "message_stop"},
        ],
    )


def _response(status: int, reason: str, body: bytes, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


async def _until(at: float) -> None:
    """Sleep until ``at`` (time.monotonic()), if it is still ahead."""
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _error(status: int, reason: str, message: str, close: bool = False) -> bytes:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    return _response(status, reason, orjson.dumps(body), close)


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ids = itertools.count(1)
        self.connections: set[asyncio.StreamWriter] = set()
        self.completions = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                writer.write(_error(400, "Bad Request", str(exc), close=True))
        finally:
            self.connections.discard(writer)
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is done."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # the client closed an idle keep-alive connection
        arrived = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise BadRequest("malformed request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        body = await self._body(reader, headers)
        path = target.split("?", 1)[0]
        if method == "GET" and path in ("/health", "/v1/health"):
            writer.write(_response(200, "OK", b'{"status":"ok"}', close))
        elif method == "GET" and path in ("/v1/models", "/models"):
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"}
                for m in self.settings.models
            ]
            writer.write(
                _response(200, "OK", orjson.dumps({"object": "list", "data": data}), close)
            )
        elif method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                request = None
            if not isinstance(request, dict):
                writer.write(_error(400, "Bad Request", "the body is not a JSON object", close))
            elif request.get("stream"):
                await self._stream(writer, request, arrived, close)
            else:
                await self._complete(writer, request, arrived, close)
        elif method == "POST" and path in ("/v1/responses", "/responses", "/v1/messages"):
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                request = None
            if not isinstance(request, dict) or not request.get("stream"):
                writer.write(_error(400, "Bad Request", "a streamed JSON request only", close))
            else:
                wire = _messages_wire if path == "/v1/messages" else _responses_wire
                await self._events(
                    writer, wire(str(request.get("model") or ""), self.ids), arrived, close
                )
        else:
            writer.write(_error(404, "Not Found", f"no route {method} {path}", close))
        await writer.drain()
        return not close

    async def _events(
        self, writer: asyncio.StreamWriter, wire: _Wire, arrived: float, close: bool
    ) -> None:
        """A streamed text answer in a typed-event wire (Responses, Messages)."""
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
            + (b"connection: close\r\n" if close else b"")
            + b"\r\n"
            + b"".join(_event(e) for e in wire.opening)
        )
        await writer.drain()
        for i, at in enumerate(self._times(arrived)):
            await _until(at)
            writer.write(_event(wire.token(f" t{i}@{time.monotonic_ns()}")))
            await writer.drain()
        tokens = self.settings.tokens
        writer.write(b"".join(_event(e) for e in wire.closing(tokens)) + b"0\r\n\r\n")
        self.completions += 1

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return b"".join(parts)
                total += size
                if total > _MAX_BODY:
                    raise BadRequest("body too large")
                parts.append((await reader.readexactly(size + 2))[:-2])
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY:
            raise BadRequest("body too large")
        return await reader.readexactly(length) if length else b""

    def _times(self, arrived: float) -> list[float]:
        s = self.settings
        return [arrived + s.ttft_s + i * s.gap_s for i in range(s.tokens)]

    async def _stream(
        self, writer: asyncio.StreamWriter, request: dict[str, Any], arrived: float, close: bool
    ) -> None:
        s = self.settings
        model = str(request.get("model") or "")
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-bench{next(self.ids)}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": None,
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        step = self._tool_step(request)
        first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if step is not None:
            name, number = step
            call_id = f"call_bench{next(self.ids)}"
            first["content"] = None
            first["tool_calls"] = [
                {"index": 0, "id": call_id, "type": "function",
                 "function": {"name": name, "arguments": ""}}
            ]  # fmt: skip
            arguments = orjson.dumps({"step": number, "arrived_ns": int(arrived * 1e9)}).decode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
            + (b"connection: close\r\n" if close else b"")
            + b"\r\n"
            + chunk(first)
        )
        await writer.drain()
        if step is None:
            for i, at in enumerate(self._times(arrived)):
                await _until(at)
                writer.write(chunk({"content": f" t{i}@{time.monotonic_ns()}"}))
                await writer.drain()
        else:
            n = len(arguments)
            pieces = min(s.tokens, n)
            fragments = [arguments[i * n // pieces : (i + 1) * n // pieces] for i in range(pieces)]
            for fragment, at in zip(fragments, self._times(arrived), strict=False):
                await _until(at)
                writer.write(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
                )
                await writer.drain()
        tail = chunk({}, "stop" if step is None else "tool_calls")
        if include_usage:
            usage = {
                "prompt_tokens": 10,
                "completion_tokens": s.tokens,
                "total_tokens": 10 + s.tokens,
            }
            tail += _sse({**base, "choices": [], "usage": usage})
        writer.write(tail + _chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.completions += 1

    def _tool_step(self, request: dict[str, Any]) -> tuple[str, int] | None:
        """The tool to call and the call's number, or None when the answer is text."""
        tools = request.get("tools")
        if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        name = (tools[0].get("function") or {}).get("name")
        messages = request.get("messages")
        if not isinstance(name, str) or not isinstance(messages, list):
            return None
        results = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
        return (name, results + 1) if results < self.settings.tool_steps else None

    async def _complete(
        self, writer: asyncio.StreamWriter, request: dict[str, Any], arrived: float, close: bool
    ) -> None:
        s = self.settings
        times = self._times(arrived)
        if times:
            await asyncio.sleep(max(0.0, times[-1] - time.monotonic()))
        message = {
            "role": "assistant",
            "content": "".join(f" t{i}" for i in range(s.tokens)),
            "refusal": None,
        }
        body = {
            "id": f"chatcmpl-bench{next(self.ids)}",
            "object": "chat.completion",
            "created": CREATED,
            "model": str(request.get("model") or ""),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": s.tokens,
                "total_tokens": 10 + s.tokens,
            },
        }
        writer.write(_response(200, "OK", orjson.dumps(body), close))
        self.completions += 1


async def serve(args: argparse.Namespace) -> None:
    settings = Settings(
        tokens=args.tokens,
        ttft_s=args.ttft_ms / 1000,
        gap_s=args.gap_ms / 1000,
        models=tuple(m.strip() for m in args.model.split(",") if m.strip()),
        tool_steps=args.tool_steps,
    )
    upstream = Upstream(settings)
    server = await asyncio.start_server(
        upstream.handle, HOST, args.port, backlog=1024, limit=_MAX_HEAD
    )
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_close:
        fd = sys.stdin.fileno()
        loop.add_reader(fd, lambda: None if os.read(fd, 4096) else stop.set())
    print(f"READY http://{HOST}:{port} pid={os.getpid()}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        for writer in list(upstream.connections):
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()
        print(f"served {upstream.completions} completions", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    ap.add_argument("--tokens", type=int, default=50, help="content chunks per completion")
    ap.add_argument("--ttft-ms", type=float, default=15.0, help="request -> first content chunk")
    ap.add_argument("--gap-ms", type=float, default=15.0, help="between content chunks")
    ap.add_argument("--model", default="bench-model", help="model id(s) for /v1/models")
    ap.add_argument(
        "--tool-steps", type=int, default=9, help="tool calls before the text answer, given tools"
    )
    ap.add_argument("--exit-on-stdin-close", action="store_true")
    ap.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = ap.parse_args()
    if args.tokens < 1 or args.gap_ms < 0 or args.ttft_ms < 0 or args.tool_steps < 0:
        ap.error("--tokens must be >= 1, the delays and --tool-steps >= 0")
    loop_factory = None
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
