"""The I/O-free half of the Durable Streams clients.

What a stream client sends and what it makes of the answers, with no I/O: the
results it returns, request headers and bodies, responses and SSE events read
into batches, and an idempotent producer's numbering. The clients themselves
(``_async_streams``, and ``_sync_streams`` generated from it) only move bytes.
"""

from __future__ import annotations

import base64
import json as jsonlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx

from tether.client._sentinel import UNSET
from tether.client._sse import SSEDecoder, SSEEvent
from tether.client.errors import StaleEpoch

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


# -- request building and response reading ---------------------------------------


def request_body(data: bytes | str | None, json: Any) -> tuple[bytes, bool]:
    if json is not UNSET:
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


def create_request(
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
    body, _ = request_body(data, json)
    return headers, body


def create_result(resp: httpx.Response) -> CreateResult:
    h = resp.headers
    return CreateResult(
        created=resp.status_code == 201,
        next_offset=h.get("stream-next-offset", ""),
        content_type=h.get("content-type", ""),
        closed=h.get("stream-closed", "").lower() == "true",
        location=h.get("location"),
    )


def append_result(resp: httpx.Response) -> AppendResult:
    h = resp.headers
    epoch, seq = h.get("producer-epoch"), h.get("producer-seq")
    return AppendResult(
        next_offset=h.get("stream-next-offset", ""),
        closed=h.get("stream-closed", "").lower() == "true",
        appended=not (epoch is not None and resp.status_code == 204),
        producer_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        producer_seq=int(seq) if seq and seq.isdigit() else None,
    )


def stream_info(resp: httpx.Response) -> StreamInfo:
    h = resp.headers
    ttl = h.get("stream-ttl")
    return StreamInfo(
        content_type=h.get("content-type", ""),
        next_offset=h.get("stream-next-offset", ""),
        closed=h.get("stream-closed", "").lower() == "true",
        ttl=int(ttl) if ttl and ttl.isdigit() else None,
        expires_at=h.get("stream-expires-at"),
    )


def read_batch(resp: httpx.Response, offset: str, content_type: str | None = None) -> Batch:
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


class SSEBatchReader:
    """Turns a stream's SSE events into batches: data is held until the control
    event that gives its end offset, so a cut between them loses nothing."""

    def __init__(self, offset: str, content_type: str, base64_data: bool) -> None:
        self.offset = offset
        self.cursor: str | None = None
        self.content_type = content_type
        self.base64 = base64_data
        self.closed = False
        self._pending: list[bytes] = []
        self._decoder = SSEDecoder()

    def feed_bytes(self, chunk: bytes) -> list[Batch]:
        """The batches a chunk of the response completes, up to the stream's close."""
        batches = []
        for msg in self._decoder.feed(chunk):
            if not isinstance(msg, SSEEvent):
                continue
            batch = self.feed(msg)
            if batch is not None:
                batches.append(batch)
            if self.closed:
                break
        return batches

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


class ProducerCore:
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
