"""A low-level client of the Durable Streams protocol, as tether serves it.

``StreamClient`` (sync) and ``AsyncStreamClient`` (async) create, append to,
read, tail, close and delete streams under ``/v1/stream/``. Offsets are the
opaque strings the server hands out (``Stream-Next-Offset``); ``"-1"`` is the
beginning of a stream and ``"now"`` its current end.

- ``read`` catches up: it follows ``Stream-Next-Offset`` until the server says
  ``Stream-Up-To-Date``, and returns everything read.
- ``tail`` follows live (SSE by default, or long-poll) and yields batches as
  they come; when a connection drops (or an SSE response ends, as tether's do
  every 60 s) it reconnects from the offset after the last batch it yielded,
  so every byte is seen exactly once. It ends when the stream is closed.
- ``producer`` gives an idempotent :class:`Producer`: appends carry
  ``Producer-Id``/``-Epoch``/``-Seq``, so resending one after a network error
  can never duplicate it (the server recognises the sequence number).
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from tether.client._http import (
    DEFAULT_LIVENESS,
    DEFAULT_TIMEOUT,
    USER_AGENT,
    Backoff,
    api_error,
    connection_error,
    make_auth,
    resolve_api_key,
    resolve_base_url,
)
from tether.client._sse import SSEDecoder, SSEEvent
from tether.client.errors import APIError, ServerError, StaleEpoch, TetherConnectionError

_UNSET: Any = object()
#: Takeovers an auto-claiming producer attempts for one append before giving up.
MAX_CLAIMS = 3
Live = Literal["sse", "long-poll"]


# -- results ----------------------------------------------------------------------


@dataclass(slots=True)
class StreamInfo:
    """A stream's metadata (``HEAD``)."""

    content_type: str
    next_offset: str
    closed: bool = False
    ttl: int | None = None
    #: RFC 3339 text, as the server sent it.
    expires_at: str | None = None


@dataclass(slots=True)
class CreateResult:
    #: False when the stream already existed with the same settings (idempotent create).
    created: bool
    next_offset: str
    content_type: str
    closed: bool = False
    location: str | None = None


@dataclass(slots=True)
class AppendResult:
    next_offset: str
    closed: bool = False
    #: False when the server recognised a producer's retry and dropped it.
    appended: bool = True
    producer_epoch: int | None = None
    producer_seq: int | None = None


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


@dataclass(slots=True)
class Batch:
    """What one read (or one SSE data event) delivered."""

    #: Offset the batch starts at, and the one right after it.
    offset: str
    next_offset: str
    #: The payload: bytes for byte and text streams; for JSON streams the JSON
    #: array of the batch's messages (see :attr:`items`).
    data: bytes
    content_type: str
    up_to_date: bool = False
    closed: bool = False

    @property
    def is_json(self) -> bool:
        return is_json_type(self.content_type)

    @property
    def items(self) -> list[Any]:
        """A JSON stream's messages, decoded."""
        if not self.data:
            return []
        value = jsonlib.loads(self.data)
        return value if isinstance(value, list) else [value]

    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass(slots=True)
class ReadResult:
    """Everything a catch-up read returned, up to ``next_offset``."""

    offset: str
    next_offset: str
    content_type: str
    up_to_date: bool
    closed: bool
    batches: list[Batch] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        """The bytes read (byte and text streams)."""
        return b"".join(b.data for b in self.batches)

    @property
    def items(self) -> list[Any]:
        """The messages read (JSON streams)."""
        return [item for b in self.batches for item in b.items]

    def text(self) -> str:
        return self.data.decode("utf-8")


# -- request building and response reading, shared by both clients -----------------


def _body(data: bytes | str | None, json: Any) -> tuple[bytes, bool]:
    if json is not _UNSET:
        return jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode(), True
    if data is None:
        return b"", False
    return (data.encode() if isinstance(data, str) else bytes(data)), False


def _expires(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("expires_at needs a time zone")
        return value.isoformat()
    return value


def _create_request(
    content_type: str,
    ttl: int | None,
    expires_at: datetime | str | None,
    closed: bool,
    data: bytes | str | None,
    json: Any,
    forked_from: str | None,
    fork_offset: str | None,
) -> tuple[dict[str, str], bytes]:
    headers = {"content-type": content_type}
    if ttl is not None:
        headers["stream-ttl"] = str(int(ttl))
    if expires_at is not None:
        headers["stream-expires-at"] = _expires(expires_at)
    if closed:
        headers["stream-closed"] = "true"
    if forked_from is not None:
        headers["stream-forked-from"] = forked_from
    if fork_offset is not None:
        headers["stream-fork-offset"] = fork_offset
    body, _ = _body(data, json)
    return headers, body


def _create_result(resp: httpx.Response) -> CreateResult:
    h = resp.headers
    return CreateResult(
        created=resp.status_code == 201,
        next_offset=h.get("stream-next-offset", ""),
        content_type=h.get("content-type", ""),
        closed=h.get("stream-closed", "").lower() == "true",
        location=h.get("location"),
    )


def _append_result(resp: httpx.Response) -> AppendResult:
    h = resp.headers
    epoch, seq = h.get("producer-epoch"), h.get("producer-seq")
    return AppendResult(
        next_offset=h.get("stream-next-offset", ""),
        closed=h.get("stream-closed", "").lower() == "true",
        appended=not (epoch is not None and resp.status_code == 204),
        producer_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        producer_seq=int(seq) if seq and seq.isdigit() else None,
    )


def _info(resp: httpx.Response) -> StreamInfo:
    h = resp.headers
    ttl = h.get("stream-ttl")
    return StreamInfo(
        content_type=h.get("content-type", ""),
        next_offset=h.get("stream-next-offset", ""),
        closed=h.get("stream-closed", "").lower() == "true",
        ttl=int(ttl) if ttl and ttl.isdigit() else None,
        expires_at=h.get("stream-expires-at"),
    )


def _batch(resp: httpx.Response, offset: str, content_type: str | None = None) -> Batch:
    h = resp.headers
    ctype = content_type or h.get("content-type", "")
    data = resp.content if resp.status_code == 200 else b""
    if is_json_type(ctype) and data.strip() == b"[]":
        data = b""
    return Batch(
        offset=offset,
        next_offset=h.get("stream-next-offset", offset),
        data=data,
        content_type=ctype,
        up_to_date=h.get("stream-up-to-date", "").lower() == "true",
        closed=h.get("stream-closed", "").lower() == "true",
    )


class _SSEReader:
    """Turns a stream's SSE events into batches: data is held until the control
    event that gives its end offset, so a cut between them loses nothing."""

    def __init__(self, offset: str, content_type: str, base64_data: bool) -> None:
        self.offset = offset
        self.cursor: str | None = None
        self.content_type = content_type
        self.base64 = base64_data
        self.closed = False
        self._pending: list[bytes] = []

    def feed(self, msg: SSEEvent) -> Batch | None:
        if msg.event == "data":
            if self.base64:
                self._pending.append(base64.b64decode("".join(msg.data.split())))
            else:
                self._pending.append(msg.data.encode())
            return None
        if msg.event != "control":
            return None
        try:
            control = jsonlib.loads(msg.data)
        except ValueError:
            return None
        start = self.offset
        self.offset = control.get("streamNextOffset", self.offset)
        self.cursor = control.get("streamCursor", self.cursor)
        self.closed = bool(control.get("streamClosed"))
        pending, self._pending = self._pending, []
        if not pending:
            return None
        if is_json_type(self.content_type):
            items = [item for chunk in pending for item in _as_list(jsonlib.loads(chunk))]
            data = jsonlib.dumps(items, separators=(",", ":"), ensure_ascii=False).encode()
        else:
            data = b"".join(pending)
        return Batch(
            offset=start,
            next_offset=self.offset,
            data=data,
            content_type=self.content_type,
            up_to_date=bool(control.get("upToDate")),
            closed=self.closed,
        )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class _ProducerCore:
    """An idempotent producer's bookkeeping: what is unsent, with which numbers."""

    def __init__(
        self, producer_id: str, epoch: int, seq: int, auto_claim: bool, content_type: str | None
    ) -> None:
        if not producer_id:
            raise ValueError("producer_id must not be empty")
        self.producer_id = producer_id
        self.epoch = epoch
        self.seq = seq
        self.auto_claim = auto_claim
        self.content_type = content_type
        #: Appends not yet acknowledged, oldest first: (body, is_json, close).
        self.unsent: deque[tuple[bytes, bool, bool]] = deque()

    def headers(self, is_json: bool, close: bool, body: bytes) -> dict[str, str]:
        headers = {
            "producer-id": self.producer_id,
            "producer-epoch": str(self.epoch),
            "producer-seq": str(self.seq),
        }
        if body:
            headers["content-type"] = (
                "application/json" if is_json else (self.content_type or "application/octet-stream")
            )
        if close:
            headers["stream-closed"] = "true"
        return headers

    def acknowledged(self) -> None:
        self.unsent.popleft()
        self.seq += 1

    def claim(self, err: StaleEpoch, claims: int) -> bool:
        """After a 403: take over with a newer epoch, if allowed (a few times per append,
        so two auto-claiming producers cannot fence each other forever)."""
        if not self.auto_claim or claims >= MAX_CLAIMS:
            self.unsent.popleft()  # refused: never recorded
            return False
        current = err.current_epoch
        self.epoch = (current if current is not None else self.epoch) + 1
        self.seq = 0
        return True

    def __repr__(self) -> str:
        return f"Producer(id={self.producer_id!r}, epoch={self.epoch}, seq={self.seq})"


# -- sync ---------------------------------------------------------------------------


class StreamClient:
    """Synchronous Durable Streams client (``base_url`` and ``api_key`` as for
    :class:`tether.client.Tether`)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        prefix: str = "/v1/stream/",
        timeout: float = DEFAULT_TIMEOUT,
        liveness_timeout: float = DEFAULT_LIVENESS,
        reconnect_timeout: float = 60.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.prefix = "/" + prefix.strip("/") + "/"
        self._auth = make_auth(resolve_api_key(api_key))
        self.timeout = timeout
        self.liveness_timeout = liveness_timeout
        self.reconnect_timeout = reconnect_timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=timeout, headers={"user-agent": USER_AGENT}
        )
        self._types: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"StreamClient(base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        return self.base_url + self.prefix + quote(path.strip("/"), safe="/")

    def close_client(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_client()

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        url = self.url(path)
        try:
            resp = self._http.request(
                method, url, headers=headers, content=content, params=params, auth=self._auth,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )  # fmt: skip
        except httpx.TransportError as err:
            raise connection_error(err, method, url) from err
        if resp.status_code >= 400:
            raise api_error(resp)
        return resp

    def _content_type(self, path: str) -> str:
        ctype = self._types.get(path)
        if ctype is None:
            ctype = self.head(path).content_type
        return ctype

    # -- writes ---------------------------------------------------------------------

    def create(
        self,
        path: str,
        *,
        content_type: str = "application/octet-stream",
        ttl: int | None = None,
        expires_at: datetime | str | None = None,
        closed: bool = False,
        data: bytes | str | None = None,
        json: Any = _UNSET,
        forked_from: str | None = None,
        fork_offset: str | None = None,
    ) -> CreateResult:
        """Create a stream (idempotent with the same settings; 409 otherwise).

        ``ttl`` (seconds, renewed by reads and appends) and ``expires_at`` are
        exclusive; ``data``/``json`` are its first contents; ``closed`` creates
        it closed.
        """
        headers, body = _create_request(
            content_type, ttl, expires_at, closed, data, json, forked_from, fork_offset
        )
        result = _create_result(self._request("PUT", path, headers=headers, content=body))
        self._types[path] = result.content_type or content_type
        return result

    def append(
        self,
        path: str,
        data: bytes | str | None = None,
        *,
        json: Any = _UNSET,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """Append bytes (or text), or with ``json=`` a JSON value (a list appends
        each of its items as a message). ``seq`` is sent as ``Stream-Seq`` (must
        grow, compared byte-wise); ``close`` closes the stream with this append."""
        body, is_json = _body(data, json)
        headers: dict[str, str] = {}
        if body:
            headers["content-type"] = content_type or (
                "application/json" if is_json else self._content_type(path)
            )
        if seq is not None:
            headers["stream-seq"] = seq
        if close:
            headers["stream-closed"] = "true"
        return _append_result(self._request("POST", path, headers=headers, content=body))

    def close(self, path: str) -> AppendResult:
        """Close the stream: readers are told it ends here."""
        return self.append(path, close=True)

    def delete(self, path: str) -> None:
        self._request("DELETE", path)
        self._types.pop(path, None)

    def head(self, path: str) -> StreamInfo:
        info = _info(self._request("HEAD", path))
        self._types[path] = info.content_type
        return info

    def producer(
        self,
        path: str,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        content_type: str | None = None,
        max_retries: int = 5,
    ) -> Producer:
        return Producer(
            self, path, producer_id, epoch=epoch, seq=seq, auto_claim=auto_claim,
            content_type=content_type, max_retries=max_retries,
        )  # fmt: skip

    # -- reads ----------------------------------------------------------------------

    def read_once(self, path: str, offset: str = "-1") -> Batch:
        """One catch-up read from ``offset`` (at most what one response carries)."""
        return _batch(self._request("GET", path, params={"offset": offset}), offset)

    def read(self, path: str, offset: str = "-1") -> ReadResult:
        """Everything from ``offset`` to the stream's current end."""
        batches: list[Batch] = []
        start = offset
        while True:
            batch = self.read_once(path, offset)
            if batch.data:
                batches.append(batch)
            offset = batch.next_offset
            if batch.up_to_date or batch.closed or not batch.data:
                return ReadResult(
                    start, offset, batch.content_type, batch.up_to_date, batch.closed, batches
                )

    def tail(self, path: str, offset: str = "-1", *, live: Live = "sse") -> Iterator[Batch]:
        """Follow the stream from ``offset`` (``"now"``: only what comes next).

        Yields each batch of new data once, reconnecting from the last batch's
        end after a drop; ends when the stream is closed. Raises
        :class:`NotFound`/:class:`Gone` if the stream disappears, and
        :class:`TetherConnectionError` after ``reconnect_timeout`` seconds of
        failing to reconnect.
        """
        if live == "sse":
            return self._tail_sse(path, offset)
        if live == "long-poll":
            return self._tail_long_poll(path, offset)
        raise ValueError("live must be 'sse' or 'long-poll'")

    def _tail_sse(self, path: str, offset: str) -> Iterator[Batch]:
        ctype = self._content_type(path)
        backoff = Backoff()
        failing_since: float | None = None
        cursor: str | None = None
        while True:
            params = {"offset": offset, "live": "sse"}
            if cursor:
                params["cursor"] = cursor
            timeout = httpx.Timeout(self.timeout, read=self.liveness_timeout)
            progressed = False
            opened = time.monotonic()
            try:
                with self._http.stream(
                    "GET", self.url(path), params=params, auth=self._auth, timeout=timeout,
                    headers={"accept": "text/event-stream"},
                ) as resp:  # fmt: skip
                    if resp.status_code >= 400:
                        raise api_error(resp, resp.read())
                    failing_since = None
                    reader = _SSEReader(
                        offset, ctype, resp.headers.get("stream-sse-data-encoding") == "base64"
                    )
                    decoder = SSEDecoder()
                    for chunk in resp.iter_bytes():
                        for msg in decoder.feed(chunk):
                            if not isinstance(msg, SSEEvent):
                                continue
                            batch = reader.feed(msg)
                            if reader.offset != offset:
                                offset, progressed = reader.offset, True
                            cursor = reader.cursor
                            if batch is not None:
                                yield batch
                            if reader.closed:
                                return
                # The server ended the response (tether's SSE responses last 60 s):
                # carry on at once, unless it keeps ending them straight away.
                if progressed or time.monotonic() - opened > 1.0:
                    backoff.reset()
                else:
                    time.sleep(backoff.next())
            except httpx.ReadTimeout:
                continue
            except (httpx.TransportError, ServerError) as err:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.reconnect_timeout:
                    raise connection_error(err, "GET", self.url(path)) from err
                if progressed:
                    backoff.reset()
                time.sleep(backoff.next())

    def _tail_long_poll(self, path: str, offset: str) -> Iterator[Batch]:
        backoff = Backoff()
        failing_since: float | None = None
        cursor: str | None = None
        timeout = httpx.Timeout(self.timeout, read=self.liveness_timeout)
        while True:
            params = {"offset": offset, "live": "long-poll"}
            if cursor:
                params["cursor"] = cursor
            try:
                resp = self._request("GET", path, params=params, timeout=timeout)
            except (TetherConnectionError, ServerError):
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.reconnect_timeout:
                    raise
                time.sleep(backoff.next())
                continue
            failing_since = None
            backoff.reset()
            batch = _batch(resp, offset)
            cursor = resp.headers.get("stream-cursor", cursor)
            offset = batch.next_offset
            if batch.data:
                yield batch
            if batch.closed and (batch.up_to_date or not batch.data):
                return


class Producer:
    """An idempotent producer on one stream (see :meth:`StreamClient.producer`).

    Each append carries the producer's id, epoch and the next sequence number.
    Network errors and 5xx are retried (``max_retries`` times, with backoff)
    with the same numbers, which the server deduplicates; an append that still
    fails stays queued and is sent, first and with the same numbers, by the
    next ``append`` or ``flush``. Another producer with the same id and a
    newer epoch fences this one off (:class:`StaleEpoch`); with
    ``auto_claim=True`` this one takes over again with the newer epoch + 1.

    A producer that restarts must not reuse an epoch with a sequence it
    already used (the server would take its appends for retries and drop
    them): start it with a higher ``epoch``, or use ``auto_claim``.
    """

    def __init__(
        self,
        client: StreamClient,
        path: str,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        content_type: str | None = None,
        max_retries: int = 5,
    ) -> None:
        self._client = client
        self.path = path
        self._core = _ProducerCore(producer_id, epoch, seq, auto_claim, content_type)
        self.max_retries = max_retries
        self._lock = threading.Lock()

    @property
    def producer_id(self) -> str:
        return self._core.producer_id

    @property
    def epoch(self) -> int:
        return self._core.epoch

    @property
    def seq(self) -> int:
        """The sequence number the next append will carry."""
        return self._core.seq

    @property
    def pending(self) -> int:
        """Appends not yet acknowledged by the server."""
        return len(self._core.unsent)

    def __repr__(self) -> str:
        return repr(self._core)

    def append(
        self, data: bytes | str | None = None, *, json: Any = _UNSET, close: bool = False
    ) -> AppendResult:
        body, is_json = _body(data, json)
        if not body and not close:
            raise ValueError("an append needs data, json or close=True")
        with self._lock:
            if body and not is_json and self._core.content_type is None:
                self._core.content_type = self._client._content_type(self.path)
            self._core.unsent.append((body, is_json, close))
            return self._flush()

    def close(self) -> AppendResult:
        """Close the stream (idempotently, as this producer)."""
        return self.append(close=True)

    def flush(self) -> AppendResult | None:
        """Send whatever earlier failures left unsent."""
        with self._lock:
            return self._flush() if self._core.unsent else None

    def _flush(self) -> AppendResult:
        core = self._core
        result: AppendResult | None = None
        while core.unsent:
            body, is_json, close = core.unsent[0]
            backoff = Backoff()
            attempt = claims = 0
            while True:
                try:
                    resp = self._client._request(
                        "POST", self.path, headers=core.headers(is_json, close, body),
                        content=body,
                    )  # fmt: skip
                    break
                except StaleEpoch as err:
                    if not core.claim(err, claims):
                        raise
                    claims += 1
                except (TetherConnectionError, ServerError):
                    attempt += 1
                    if attempt > self.max_retries:
                        raise
                    time.sleep(backoff.next())
                except APIError:
                    core.unsent.popleft()  # refused: never recorded, so its seq is free
                    raise
            result = _append_result(resp)
            core.acknowledged()
        assert result is not None
        return result


# -- async --------------------------------------------------------------------------


class AsyncStreamClient:
    """Asynchronous Durable Streams client; the same API as :class:`StreamClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        prefix: str = "/v1/stream/",
        timeout: float = DEFAULT_TIMEOUT,
        liveness_timeout: float = DEFAULT_LIVENESS,
        reconnect_timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.prefix = "/" + prefix.strip("/") + "/"
        self._auth = make_auth(resolve_api_key(api_key))
        self.timeout = timeout
        self.liveness_timeout = liveness_timeout
        self.reconnect_timeout = reconnect_timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout, headers={"user-agent": USER_AGENT}
        )
        self._types: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AsyncStreamClient(base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        return self.base_url + self.prefix + quote(path.strip("/"), safe="/")

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncStreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        url = self.url(path)
        try:
            resp = await self._http.request(
                method, url, headers=headers, content=content, params=params, auth=self._auth,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )  # fmt: skip
        except httpx.TransportError as err:
            raise connection_error(err, method, url) from err
        if resp.status_code >= 400:
            raise api_error(resp)
        return resp

    async def _content_type(self, path: str) -> str:
        ctype = self._types.get(path)
        if ctype is None:
            ctype = (await self.head(path)).content_type
        return ctype

    async def create(
        self,
        path: str,
        *,
        content_type: str = "application/octet-stream",
        ttl: int | None = None,
        expires_at: datetime | str | None = None,
        closed: bool = False,
        data: bytes | str | None = None,
        json: Any = _UNSET,
        forked_from: str | None = None,
        fork_offset: str | None = None,
    ) -> CreateResult:
        headers, body = _create_request(
            content_type, ttl, expires_at, closed, data, json, forked_from, fork_offset
        )
        result = _create_result(await self._request("PUT", path, headers=headers, content=body))
        self._types[path] = result.content_type or content_type
        return result

    async def append(
        self,
        path: str,
        data: bytes | str | None = None,
        *,
        json: Any = _UNSET,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        body, is_json = _body(data, json)
        headers: dict[str, str] = {}
        if body:
            headers["content-type"] = content_type or (
                "application/json" if is_json else await self._content_type(path)
            )
        if seq is not None:
            headers["stream-seq"] = seq
        if close:
            headers["stream-closed"] = "true"
        return _append_result(await self._request("POST", path, headers=headers, content=body))

    async def close(self, path: str) -> AppendResult:
        return await self.append(path, close=True)

    async def delete(self, path: str) -> None:
        await self._request("DELETE", path)
        self._types.pop(path, None)

    async def head(self, path: str) -> StreamInfo:
        info = _info(await self._request("HEAD", path))
        self._types[path] = info.content_type
        return info

    def producer(
        self,
        path: str,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        content_type: str | None = None,
        max_retries: int = 5,
    ) -> AsyncProducer:
        return AsyncProducer(
            self, path, producer_id, epoch=epoch, seq=seq, auto_claim=auto_claim,
            content_type=content_type, max_retries=max_retries,
        )  # fmt: skip

    async def read_once(self, path: str, offset: str = "-1") -> Batch:
        return _batch(await self._request("GET", path, params={"offset": offset}), offset)

    async def read(self, path: str, offset: str = "-1") -> ReadResult:
        batches: list[Batch] = []
        start = offset
        while True:
            batch = await self.read_once(path, offset)
            if batch.data:
                batches.append(batch)
            offset = batch.next_offset
            if batch.up_to_date or batch.closed or not batch.data:
                return ReadResult(
                    start, offset, batch.content_type, batch.up_to_date, batch.closed, batches
                )

    def tail(self, path: str, offset: str = "-1", *, live: Live = "sse") -> AsyncIterator[Batch]:
        if live == "sse":
            return self._tail_sse(path, offset)
        if live == "long-poll":
            return self._tail_long_poll(path, offset)
        raise ValueError("live must be 'sse' or 'long-poll'")

    async def _tail_sse(self, path: str, offset: str) -> AsyncIterator[Batch]:
        ctype = await self._content_type(path)
        backoff = Backoff()
        failing_since: float | None = None
        cursor: str | None = None
        while True:
            params = {"offset": offset, "live": "sse"}
            if cursor:
                params["cursor"] = cursor
            timeout = httpx.Timeout(self.timeout, read=self.liveness_timeout)
            progressed = False
            opened = time.monotonic()
            try:
                async with self._http.stream(
                    "GET", self.url(path), params=params, auth=self._auth, timeout=timeout,
                    headers={"accept": "text/event-stream"},
                ) as resp:  # fmt: skip
                    if resp.status_code >= 400:
                        raise api_error(resp, await resp.aread())
                    failing_since = None
                    reader = _SSEReader(
                        offset, ctype, resp.headers.get("stream-sse-data-encoding") == "base64"
                    )
                    decoder = SSEDecoder()
                    async for chunk in resp.aiter_bytes():
                        for msg in decoder.feed(chunk):
                            if not isinstance(msg, SSEEvent):
                                continue
                            batch = reader.feed(msg)
                            if reader.offset != offset:
                                offset, progressed = reader.offset, True
                            cursor = reader.cursor
                            if batch is not None:
                                yield batch
                            if reader.closed:
                                return
                # The server ended the response (tether's SSE responses last 60 s):
                # carry on at once, unless it keeps ending them straight away.
                if progressed or time.monotonic() - opened > 1.0:
                    backoff.reset()
                else:
                    await asyncio.sleep(backoff.next())
            except httpx.ReadTimeout:
                continue
            except (httpx.TransportError, ServerError) as err:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.reconnect_timeout:
                    raise connection_error(err, "GET", self.url(path)) from err
                if progressed:
                    backoff.reset()
                await asyncio.sleep(backoff.next())

    async def _tail_long_poll(self, path: str, offset: str) -> AsyncIterator[Batch]:
        backoff = Backoff()
        failing_since: float | None = None
        cursor: str | None = None
        timeout = httpx.Timeout(self.timeout, read=self.liveness_timeout)
        while True:
            params = {"offset": offset, "live": "long-poll"}
            if cursor:
                params["cursor"] = cursor
            try:
                resp = await self._request("GET", path, params=params, timeout=timeout)
            except (TetherConnectionError, ServerError):
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.reconnect_timeout:
                    raise
                await asyncio.sleep(backoff.next())
                continue
            failing_since = None
            backoff.reset()
            batch = _batch(resp, offset)
            cursor = resp.headers.get("stream-cursor", cursor)
            offset = batch.next_offset
            if batch.data:
                yield batch
            if batch.closed and (batch.up_to_date or not batch.data):
                return


class AsyncProducer:
    """The asynchronous :class:`Producer`."""

    def __init__(
        self,
        client: AsyncStreamClient,
        path: str,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        content_type: str | None = None,
        max_retries: int = 5,
    ) -> None:
        self._client = client
        self.path = path
        self._core = _ProducerCore(producer_id, epoch, seq, auto_claim, content_type)
        self.max_retries = max_retries
        self._lock = asyncio.Lock()

    @property
    def producer_id(self) -> str:
        return self._core.producer_id

    @property
    def epoch(self) -> int:
        return self._core.epoch

    @property
    def seq(self) -> int:
        return self._core.seq

    @property
    def pending(self) -> int:
        return len(self._core.unsent)

    def __repr__(self) -> str:
        return repr(self._core).replace("Producer(", "AsyncProducer(", 1)

    async def append(
        self, data: bytes | str | None = None, *, json: Any = _UNSET, close: bool = False
    ) -> AppendResult:
        body, is_json = _body(data, json)
        if not body and not close:
            raise ValueError("an append needs data, json or close=True")
        async with self._lock:
            if body and not is_json and self._core.content_type is None:
                self._core.content_type = await self._client._content_type(self.path)
            self._core.unsent.append((body, is_json, close))
            return await self._flush()

    async def close(self) -> AppendResult:
        return await self.append(close=True)

    async def flush(self) -> AppendResult | None:
        async with self._lock:
            return await self._flush() if self._core.unsent else None

    async def _flush(self) -> AppendResult:
        core = self._core
        result: AppendResult | None = None
        while core.unsent:
            body, is_json, close = core.unsent[0]
            backoff = Backoff()
            attempt = claims = 0
            while True:
                try:
                    resp = await self._client._request(
                        "POST", self.path, headers=core.headers(is_json, close, body),
                        content=body,
                    )  # fmt: skip
                    break
                except StaleEpoch as err:
                    if not core.claim(err, claims):
                        raise
                    claims += 1
                except (TetherConnectionError, ServerError):
                    attempt += 1
                    if attempt > self.max_retries:
                        raise
                    await asyncio.sleep(backoff.next())
                except APIError:
                    core.unsent.popleft()
                    raise
            result = _append_result(resp)
            core.acknowledged()
        assert result is not None
        return result


__all__ = [
    "AppendResult",
    "AsyncProducer",
    "AsyncStreamClient",
    "Batch",
    "CreateResult",
    "Producer",
    "ReadResult",
    "StreamClient",
    "StreamInfo",
]
