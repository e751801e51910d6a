"""The Durable Streams HTTP protocol over a store, as a plain ASGI app.

It is written against ASGI directly rather than a framework because every
append, read and SSE frame passes through here: the hot paths build their
responses from a few byte strings and share SSE frames between readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from tether.observability import metrics
from tether.store import errors
from tether.store.base import (
    AppendRequest,
    CreateRequest,
    ReadResult,
    Store,
    is_json,
)
from tether.store.notify import TailEvent
from tether.streams import json_body, sse
from tether.streams.body import ClientGone, read_body
from tether.streams.http_errors import TRUE, Headers, HTTPError, store_error
from tether.streams.json_body import JsonLimits
from tether.streams.live import LiveReader
from tether.streams.live import live_frame as _live_frame
from tether.streams.view import WHOLE_STORE, Authorize, Scope, StreamView
from tether.streams.wire import (
    WireError,
    format_expires_at,
    format_offset,
    next_cursor,
    parse_expires_at,
    parse_nonneg,
    parse_offset,
    parse_producer,
    request_origin,
)

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: CORS headers are the front door's (``api.guard``); these go on every response
#: (but CORP, on a bodiless 204 or 304: see ``_respond``).
NOSNIFF = (b"x-content-type-options", b"nosniff")
COMMON: Headers = [NOSNIFF, (b"cross-origin-resource-policy", b"cross-origin")]
ALLOWED_METHODS = b"GET, HEAD, PUT, POST, DELETE, OPTIONS"
#: Control characters cannot be written back in a Location header (or a log line).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
CACHEABLE = b"private, max-age=60, stale-while-revalidate=300"
#: ``scope["extensions"]`` key of a future the server resolves once the request's
#: client has gone (tether's own protocol, cli/connections.py, gives one): a live
#: reader waits on it instead of a task reading ``receive()`` (about 1 KiB a reader).
DISCONNECT = "tether.disconnect"


@dataclass(slots=True)
class StreamsConfig:
    #: URL prefix; the stream's name in the store is the rest of the path.
    prefix: str = "/v1/stream/"
    max_body: int = 10 * 1024 * 1024
    #: Soft cap on the bytes one read response carries (it holds at least one message).
    read_chunk: int = 4 * 1024 * 1024
    long_poll_timeout: float = 3.0
    #: SSE responses end after this long so that clients reconnect (section 8.2).
    sse_max_seconds: float = 60.0
    sse_heartbeat: float = 15.0
    #: Bytes an SSE reader may have waiting for its client before it is cut off.
    sse_send_buffer: int = 256 * 1024
    #: Bounds on the work one JSON body may cause.
    json: JsonLimits = field(default_factory=JsonLimits)


#: Answers a request under the reserved ``__ds`` prefix (PROTOCOL.md section 6):
#: ``(scope, receive, send, stream name, request headers)``. The layer above
#: supplies it (subscriptions); it authorizes requests itself.
Control = Callable[[Scope, Receive, Send, str, dict[str, str]], Awaitable[None]]
CONTROL_PREFIX = "__ds"


class StreamsApp:
    def __init__(
        self,
        store: Store,
        config: StreamsConfig | None = None,
        authorize: Authorize | None = None,
        control: Control | None = None,
    ) -> None:
        self.store = store
        self.config = config or StreamsConfig()
        self.authorize = authorize
        self.control = control
        self._shutdown: asyncio.Future[None] | None = None
        #: The live SSE readers: woken at shutdown, and by one timer for all of
        #: them when their heartbeat or end is due (not a timer each: memory).
        self._live: set[LiveReader] = set()
        self._ticker: asyncio.TimerHandle | None = None

    def shutdown(self) -> None:
        """End live reads (SSE, long-poll) promptly; called on SIGTERM."""
        fut = self._shutdown_future()
        if not fut.done():
            fut.set_result(None)
        for live in self._live:
            live.wake()

    def _shutdown_future(self) -> asyncio.Future[None]:
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_future()
        return self._shutdown

    def stream_name(self, path: str) -> str:
        """Store key for a URL path (or a Stream-Forked-From value)."""
        prefix = self.config.prefix
        name = path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
        if _plainly_valid(name):
            return name
        if not name or len(name) > 1024 or _CONTROL.search(name):
            raise HTTPError(400, "bad_path", "invalid stream path")
        if any(seg in ("", ".", "..") for seg in name.split("/")):
            raise HTTPError(400, "bad_path", "stream path segments must be non-empty names")
        return name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        view: StreamView = WHOLE_STORE
        try:
            name = self.stream_name(scope["path"])
            if self.control is not None and name.split("/", 1)[0] == CONTROL_PREFIX:
                await self.control(scope, receive, send, name, headers)
                return
            view = await self._view(scope, name, headers)
            path = view.path(name)
            if method == "GET":
                reading = self._get(scope, receive, send, path, headers)
                del headers  # (not held for a live read's lifetime: memory per idle reader)
                await reading
            elif method == "POST":
                await self._post(receive, send, path, headers)
            elif method == "PUT":
                await self._put(scope, receive, send, path, headers, view)
            elif method == "HEAD":
                await self._head(send, path)
            elif method == "DELETE":
                await self.store.delete(path)
                await view.deleted(path)
                await _respond(send, 204, [])
            elif method == "OPTIONS":
                await self._options(send)
            else:
                raise HTTPError(
                    405, "method_not_allowed", f"{method} is not supported on a stream",
                    [(b"allow", ALLOWED_METHODS)],
                )  # fmt: skip
        except errors.StoreError as err:
            http = store_error(err)
            http.args = (view.shown(str(http)),)
            await _error(send, http, method)
        except HTTPError as err:
            await _error(send, err, method)
        except WireError as err:
            await _error(send, HTTPError(err.status, err.code, str(err)), method)
        except ClientGone:
            return

    async def _view(self, scope: Scope, name: str, headers: dict[str, str]) -> StreamView:
        if self.authorize is None or scope["method"] == "OPTIONS":
            return WHOLE_STORE
        return await self.authorize(scope, name, headers)

    # -- writes --------------------------------------------------------------

    def _messages(self, body: bytes, content_type: str, allow_empty_array: bool) -> list[bytes]:
        if not body:
            return []
        if is_json(content_type):
            messages, was_array = json_body.split(body, self.config.json)
            if was_array and not messages and not allow_empty_array:
                raise HTTPError(400, "empty_array", "an empty JSON array appends nothing")
            return messages
        return [body]

    async def _put(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        h: dict[str, str],
        view: StreamView,
    ) -> None:
        ttl_raw, exp_raw = h.get("stream-ttl"), h.get("stream-expires-at")
        if ttl_raw is not None and exp_raw is not None:
            raise HTTPError(400, "bad_request", "use Stream-TTL or Stream-Expires-At, not both")
        ttl = parse_nonneg(ttl_raw, "Stream-TTL") if ttl_raw is not None else None
        expires_at = parse_expires_at(exp_raw) if exp_raw is not None else None
        content_type = h.get("content-type")
        if content_type is not None and "/" not in content_type:
            raise HTTPError(400, "bad_content_type", f"invalid Content-Type {content_type!r}")
        fork_from = h.get("stream-forked-from")
        fork_offset_raw = h.get("stream-fork-offset")
        sub_raw = h.get("stream-fork-sub-offset")
        sub = parse_nonneg(sub_raw, "Stream-Fork-Sub-Offset") if sub_raw is not None else 0
        if fork_from is None and (fork_offset_raw is not None or sub_raw is not None):
            raise HTTPError(400, "bad_request", "fork headers need Stream-Forked-From")
        if sub and fork_offset_raw is None:
            raise HTTPError(400, "bad_request", "Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
        fork_offset = None
        source_name = None
        if fork_from is not None:
            source_name = await view.source(self.stream_name(fork_from))
            if fork_offset_raw is not None:
                fork_offset = parse_offset(fork_offset_raw)
            if content_type is None:
                content_type = (await self.store.head(source_name)).content_type
        body = await read_body(receive, h, self.config.max_body)
        effective_type = content_type or "application/octet-stream"
        req = CreateRequest(
            content_type=content_type,
            ttl=ttl,
            expires_at=expires_at,
            closed=h.get("stream-closed", "").lower() == "true",
            fork_from=source_name,
            fork_offset=fork_offset,
            fork_sub_offset=sub,
            messages=self._messages(body, effective_type, allow_empty_array=True),
        )
        result = await self.store.create(name, req)
        if result.created:
            await view.created(name)
        meta = result.meta
        out: Headers = [
            (b"content-type", meta.content_type.encode()),
            (b"stream-next-offset", format_offset(meta.tail).encode()),
        ]
        if meta.closed:
            out.append((b"stream-closed", TRUE))
        if result.created:
            out.append((b"location", _absolute_url(scope).encode()))
        await _respond(send, 201 if result.created else 200, out)

    async def _post(self, receive: Receive, send: Send, name: str, h: dict[str, str]) -> None:
        close = h.get("stream-closed", "").lower() == "true"
        producer = parse_producer(
            h.get("producer-id"), h.get("producer-epoch"), h.get("producer-seq")
        )
        seq = h.get("stream-seq")
        body = await read_body(receive, h, self.config.max_body)
        content_type = h.get("content-type")
        if body and not content_type:
            raise HTTPError(400, "missing_content_type", "an append needs a Content-Type")
        if not body and not close:
            raise HTTPError(400, "empty_body", "an append needs a non-empty body")
        messages = self._messages(body, content_type or "", allow_empty_array=False)
        result = await self.store.append(
            name, AppendRequest(messages, content_type, seq, producer, close)
        )
        out: Headers = [(b"stream-next-offset", format_offset(result.tail).encode())]
        if result.closed:
            out.append((b"stream-closed", TRUE))
        status = 204
        if producer is not None:
            out.append((b"producer-epoch", str(result.producer_epoch).encode()))
            out.append((b"producer-seq", str(result.producer_seq).encode()))
            if result.appended and messages:
                status = 200
        await _respond(send, status, out)

    # -- metadata ------------------------------------------------------------

    async def _head(self, send: Send, name: str) -> None:
        meta = await self.store.head(name)
        out: Headers = [
            (b"content-type", meta.content_type.encode()),
            (b"stream-next-offset", format_offset(meta.tail).encode()),
            (b"cache-control", b"no-store"),
        ]
        if meta.ttl is not None:
            out.append((b"stream-ttl", str(meta.ttl).encode()))
        if meta.expires_at is not None:
            out.append((b"stream-expires-at", format_expires_at(meta.expires_at).encode()))
        if meta.closed:
            out.append((b"stream-closed", TRUE))
        await _respond(send, 200, out)

    async def _options(self, send: Send) -> None:
        """A plain OPTIONS (CORS preflights are answered in front of this app)."""
        await _respond(send, 204, [(b"allow", ALLOWED_METHODS)])

    # -- reads ---------------------------------------------------------------

    def _get(
        self, scope: Scope, receive: Receive, send: Send, name: str, h: dict[str, str]
    ) -> Awaitable[None]:
        """The read the query asks for, checked (HTTPError); not a coroutine of its own, so
        a live reader's lifetime holds no frame of it (memory per idle reader)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offsets = query.get("offset")
        if offsets is not None and len(offsets) != 1:
            raise HTTPError(400, "bad_offset", "give one offset")
        raw = offsets[0] if offsets else None
        if raw == "":
            raise HTTPError(400, "bad_offset", "offset must not be empty")
        live = query.get("live", [None])[-1]
        if live is not None and live not in ("long-poll", "sse"):
            raise HTTPError(400, "bad_live", "live must be long-poll or sse")
        if live is not None and raw is None:
            raise HTTPError(400, "bad_offset", "live reads need an offset")
        pos = parse_offset(raw if raw is not None else "-1")
        cursor = query.get("cursor", [None])[-1]
        if live is None:
            return self._catch_up(send, name, pos, h)
        if live == "long-poll":
            return self._long_poll(receive, send, name, pos, cursor)
        return self._sse(scope, receive, send, name, pos, cursor)

    def _body_of(self, res: ReadResult) -> bytes:
        if res.meta.json:
            return b"[" + b",".join(res.chunks) + b"]"
        if len(res.chunks) == 1:
            return res.chunks[0]
        return b"".join(res.chunks)

    def _read_headers(self, res: ReadResult) -> Headers:
        out: Headers = [
            (b"content-type", res.meta.content_type.encode()),
            (b"stream-next-offset", format_offset(res.next).encode()),
        ]
        if res.up_to_date:
            out.append((b"stream-up-to-date", TRUE))
        if res.closed:
            out.append((b"stream-closed", TRUE))
        return out

    async def _catch_up(self, send: Send, name: str, pos: int | None, h: dict[str, str]) -> None:
        res = await self.store.read(name, pos, self.config.read_chunk)
        out = self._read_headers(res)
        if pos is None:
            out.append((b"cache-control", b"no-store"))
            await _respond(send, 200, out, b"[]" if res.meta.json else b"")
            return
        etag = f'"{res.meta.id}:{res.start}:{res.next}{":c" if res.closed else ""}"'.encode()
        out.append((b"etag", etag))
        out.append((b"cache-control", b"no-store" if res.up_to_date else CACHEABLE))
        if h.get("if-none-match", "").encode() == etag:
            await _respond(send, 304, out)
            return
        await _respond(send, 200, out, self._body_of(res))

    async def _wait(
        self, fut: asyncio.Future[TailEvent], timeout: float, disconnect: asyncio.Future[None]
    ) -> TailEvent | None:
        """Next link of the tail chain, or None on timeout, shutdown or disconnect."""
        if not fut.done():
            shutdown = self._shutdown_future()
            await asyncio.wait((fut, shutdown, disconnect), timeout=max(timeout, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not fut.done():
                return None
        if fut.cancelled():
            return None
        return fut.result()

    async def _long_poll(
        self, receive: Receive, send: Send, name: str, pos: int | None, client_cursor: str | None
    ) -> None:
        notifier = self.store.notifier
        notifier.subscribe(name)
        disconnect = asyncio.ensure_future(_until_disconnect(receive))
        try:
            fut = notifier.watch(name)
            res = await self.store.read(name, pos, self.config.read_chunk)
            deadline = time.monotonic() + self.config.long_poll_timeout
            while not res.chunks and not res.closed:
                ev = await self._wait(fut, deadline - time.monotonic(), disconnect)
                if ev is None:
                    break
                if ev.deleted:
                    raise errors.StreamNotFound(name)
                fut = ev.next
                res = await self.store.read(name, res.next, self.config.read_chunk)
        finally:
            disconnect.cancel()
            notifier.unsubscribe(name)
        out = self._read_headers(res)
        out.append((b"stream-cursor", next_cursor(client_cursor).encode()))
        if res.chunks:
            out.append((b"cache-control", CACHEABLE if not res.up_to_date else b"no-store"))
            await _respond(send, 200, out, self._body_of(res))
        else:
            if (b"stream-up-to-date", TRUE) not in out:
                out.append((b"stream-up-to-date", TRUE))
            out.append((b"cache-control", b"no-store"))
            await _respond(send, 204, out)

    async def _sse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        pos: int | None,
        client_cursor: str | None,
    ) -> None:
        notifier = self.store.notifier
        notifier.subscribe(name)
        metrics.SSE_READERS.inc()  # one reader, counted at connect and disconnect
        disconnect = _disconnect(scope, receive)
        try:
            fut: asyncio.Future[TailEvent] | None = notifier.watch(name)
            res = await self.store.read(name, pos, self.config.read_chunk)
            encoding = sse.encoding_for(res.meta.content_type)
            await send(_start(200, _sse_headers(encoding)))
            ends_at = time.monotonic() + self.config.sse_max_seconds
            cursor = next_cursor(client_cursor)
            await _send_body(send, _read_frame(res, encoding, cursor))
            offset: int | None = None if res.closed else res.next
            if not res.up_to_date:
                fut = None
            del res  # (not held while live: memory per idle reader)
            while offset is not None:
                offset = await self._sse_catch_up(send, name, offset, fut, encoding, cursor)
                # (No frame holds a link of the tail chain past the catch-up: a
                # held link keeps every later append alive.)
                fut = None
                if offset is not None:
                    live = LiveReader(offset, encoding, cursor, self.config.sse_send_buffer)
                    live.due = min(time.monotonic() + self.config.sse_heartbeat, ends_at)
                    offset = await self._sse_live(send, name, live, ends_at, disconnect)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            metrics.SSE_READERS.dec()
            disconnect.cancel()
            notifier.unsubscribe(name)

    async def _sse_catch_up(
        self,
        send: Send,
        name: str,
        offset: int,
        fut: asyncio.Future[TailEvent] | None,
        encoding: str,
        cursor: str,
    ) -> int | None:
        """Read the store from ``offset`` until up to date (None: the stream closed).

        ``fut``, if given, is the link taken before a read that was up to date
        at ``offset``. The link is taken before each read, so appends published
        after it are found on the chain; they are sent here, and the caller
        listens in the same step, so nothing falls between the two.
        """
        notifier = self.store.notifier
        while True:
            if fut is None or fut.cancelled():
                fut = notifier.watch(name)
                res = await self.store.read(name, offset, self.config.read_chunk)
                if res.chunks or res.closed:
                    await _send_body(send, _read_frame(res, encoding, cursor))
                if res.closed:
                    return None
                offset = res.next
                if not res.up_to_date:
                    fut = None
                continue
            if not fut.done():
                return offset
            ev = fut.result()
            fut = ev.next
            if ev.deleted:
                return None
            if ev.end <= offset and not ev.closed:
                continue  # in the read already
            if ev.closed or ev.start != offset:
                fut = None  # read the store again
                continue
            await _send_body(send, _live_frame(ev, encoding, cursor))
            offset = ev.end

    def _tick_seconds(self) -> float:
        return min(1.0, self.config.sse_heartbeat / 4, self.config.sse_max_seconds / 4)

    def _tick(self) -> None:
        """Wake the live readers whose heartbeat or end is due."""
        now = time.monotonic()
        for live in self._live:
            if live.due <= now:
                live.wake()
        loop = self.store.notifier.running_loop()
        self._ticker = loop.call_later(self._tick_seconds(), self._tick) if self._live else None

    async def _sse_live(
        self,
        send: Send,
        name: str,
        live: LiveReader,
        ends_at: float,
        disconnect: asyncio.Future[None],
    ) -> int | None:
        """Write what the fan-out queues for ``live`` until the response's end.

        Returns the offset to read the store from when ``live`` fell out of step
        with the appends, else None (the response ends).
        """
        notifier = self.store.notifier
        loop = notifier.running_loop()
        shutdown = self._shutdown_future()
        heartbeat = self.config.sse_heartbeat
        notifier.listen(name, live)
        self._live.add(live)
        if self._ticker is None:
            self._ticker = loop.call_later(self._tick_seconds(), self._tick)
        disconnect.add_done_callback(live.woken)
        try:
            while True:
                if live.frames:
                    await _send_body(send, live.take())
                    live.due = min(time.monotonic() + heartbeat, ends_at)
                    continue
                if live.done or disconnect.done() or shutdown.done():
                    break
                now = time.monotonic()
                if now >= ends_at:
                    break
                if now >= live.due:
                    await _send_body(send, sse.HEARTBEAT)
                    live.due = min(now + heartbeat, ends_at)
                    continue
                live.waiter = waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    live.waiter = None
        finally:
            notifier.unlisten(name, live)
            self._live.discard(live)
        if live.cut:
            await _send_body(send, live.cut_off_frame())
            return None
        if live.gap and not (disconnect.done() or shutdown.done()):
            return live.offset
        return None


def _plainly_valid(name: str) -> bool:
    """A name that ``stream_name`` accepts, told in a few C-speed string checks (it is
    asked on every request); False only means the full checks must decide."""
    return (
        0 < len(name) <= 1024
        and name.isascii()
        and name.isprintable()
        and "//" not in name
        and "/." not in name
        and name[0] not in "./"
        and name[-1] != "/"
    )


def _read_frame(res: ReadResult, encoding: str, cursor: str) -> bytes:
    frame = sse.control_frame(format_offset(res.next), cursor, res.up_to_date, res.closed)
    if res.chunks:
        frame = sse.data_frame(res.chunks, encoding) + frame
    return frame


def _sse_headers(encoding: str) -> Headers:
    out: Headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    if encoding == sse.BASE64:
        out.append((b"stream-sse-data-encoding", b"base64"))
    return out


def _disconnect(scope: Scope, receive: Receive) -> asyncio.Future[None]:
    """Resolved once the client has gone: the server's :data:`DISCONNECT` future if it
    gives one (tether's own protocol), else a task that reads ``receive()`` for it."""
    gone: asyncio.Future[None] | None = scope.get("extensions", {}).get(DISCONNECT)
    return gone if gone is not None else asyncio.ensure_future(_until_disconnect(receive))


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _absolute_url(scope: Scope) -> str:
    return request_origin(scope) + scope["path"]


def _start(status: int, headers: Headers) -> Message:
    return {"type": "http.response.start", "status": status, "headers": COMMON + headers}


async def _send_body(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _respond(send: Send, status: int, headers: Headers, body: bytes = b"") -> None:
    if status in (204, 304):
        # No body for Cross-Origin-Resource-Policy to guard (the protocol asks for
        # nosniff on every answer); an append's 204 is the hot path, and each header
        # costs the server about 0.8 µs to check and write.
        await send(
            {"type": "http.response.start", "status": status, "headers": [NOSNIFF, *headers]}
        )
    else:
        headers.append((b"content-length", str(len(body)).encode()))
        await send(_start(status, headers))
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, err: HTTPError, method: str) -> None:
    body = (
        b""
        if method == "HEAD"
        else orjson.dumps({"error": {"code": err.code, "message": str(err)}})
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        *err.headers,
    ]
    with contextlib.suppress(Exception):
        await _respond(send, err.status, headers, body)
