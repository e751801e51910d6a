"""The asynchronous Durable Streams client: ``AsyncStreamClient`` and ``AsyncProducer``.

``scripts/unasync.py`` writes ``client/_sync_streams.py`` from
``client/_async_streams.py``: change the latter, then run the script. What
either client sends and makes of the answers is in ``_stream_wire``; the public
face is :mod:`tether.client.streams`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from tether.client._closing import AsyncStreamClientClosing
from tether.client._concurrency import AsyncLock, asleep
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
from tether.client._reconnect import Reconnect
from tether.client._sentinel import UNSET
from tether.client._stream_wire import (
    AppendResult,
    Batch,
    CreateResult,
    Live,
    ProducerCore,
    ReadResult,
    SSEBatchReader,
    StreamInfo,
    append_result,
    create_request,
    create_result,
    read_batch,
    request_body,
    stream_info,
)
from tether.client.errors import APIError, ServerError, StaleEpoch, TetherConnectionError


class AsyncStreamClient(AsyncStreamClientClosing):
    """Asynchronous Durable Streams client (``base_url`` and ``api_key`` as for
    :class:`tether.client.AsyncTether`).

    ``aclose()`` closes the client (its connections); ``close_stream(path)``
    closes a stream.
    """

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

    # -- writes ---------------------------------------------------------------------

    async def create(
        self,
        path: str,
        *,
        content_type: str = "application/octet-stream",
        ttl: int | None = None,
        expires_at: datetime | str | None = None,
        closed: bool = False,
        data: bytes | str | None = None,
        json: Any = UNSET,
        forked_from: str | None = None,
        fork_offset: str | None = None,
    ) -> CreateResult:
        """Create a stream (idempotent with the same settings; 409 otherwise).

        ``ttl`` (seconds, renewed by reads and appends) and ``expires_at`` are
        exclusive; ``data``/``json`` are its first contents; ``closed`` creates
        it closed.
        """
        headers, body = create_request(
            content_type, ttl, expires_at, closed, data, json, forked_from, fork_offset
        )
        result = create_result(await self._request("PUT", path, headers=headers, content=body))
        self._types[path] = result.content_type or content_type
        return result

    async def append(
        self,
        path: str,
        data: bytes | str | None = None,
        *,
        json: Any = UNSET,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """Append bytes (or text), or with ``json=`` a JSON value (a list appends
        each of its items as a message). ``seq`` is sent as ``Stream-Seq`` (must
        grow, compared byte-wise); ``close`` closes the stream with this append."""
        body, is_json = request_body(data, json)
        headers: dict[str, str] = {}
        if body:
            headers["content-type"] = content_type or (
                "application/json" if is_json else await self._content_type(path)
            )
        if seq is not None:
            headers["stream-seq"] = seq
        if close:
            headers["stream-closed"] = "true"
        return append_result(await self._request("POST", path, headers=headers, content=body))

    async def close_stream(self, path: str) -> AppendResult:
        """Close the stream: readers are told it ends here."""
        return await self.append(path, close=True)

    async def delete(self, path: str) -> None:
        await self._request("DELETE", path)
        self._types.pop(path, None)

    async def head(self, path: str) -> StreamInfo:
        info = stream_info(await self._request("HEAD", path))
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

    # -- reads ----------------------------------------------------------------------

    async def read_once(self, path: str, offset: str = "-1") -> Batch:
        """One catch-up read from ``offset`` (at most what one response carries)."""
        return read_batch(await self._request("GET", path, params={"offset": offset}), offset)

    async def read(self, path: str, offset: str = "-1") -> ReadResult:
        """Everything from ``offset`` to the stream's current end."""
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

    async def _tail_sse(self, path: str, offset: str) -> AsyncIterator[Batch]:
        ctype = await self._content_type(path)
        policy = Reconnect(self.reconnect_timeout)
        cursor: str | None = None
        while True:
            params = {"offset": offset, "live": "sse"}
            if cursor:
                params["cursor"] = cursor
            timeout = httpx.Timeout(self.timeout, read=self.liveness_timeout)
            policy.start()
            try:
                async with self._http.stream(
                    "GET", self.url(path), params=params, auth=self._auth, timeout=timeout,
                    headers={"accept": "text/event-stream"},
                ) as resp:  # fmt: skip
                    if resp.status_code >= 400:
                        raise api_error(resp, await resp.aread())
                    policy.connected()
                    reader = SSEBatchReader(
                        offset, ctype, resp.headers.get("stream-sse-data-encoding") == "base64"
                    )
                    async for chunk in resp.aiter_bytes():
                        batches = reader.feed_bytes(chunk)
                        if reader.offset != offset:
                            offset = reader.offset
                            policy.progressed()
                        cursor = reader.cursor
                        for batch in batches:
                            yield batch
                        if reader.closed:
                            return
                # The server ended the response (tether's SSE responses last 60 s).
                await asleep(policy.delay_after_end())
            except httpx.ReadTimeout:
                continue
            except (httpx.TransportError, ServerError) as err:
                delay = policy.delay_after_failure()
                if delay is None:
                    raise connection_error(err, "GET", self.url(path)) from err
                await asleep(delay)

    async def _tail_long_poll(self, path: str, offset: str) -> AsyncIterator[Batch]:
        policy = Reconnect(self.reconnect_timeout)
        cursor: str | None = None
        timeout = httpx.Timeout(self.timeout, read=self.liveness_timeout)
        while True:
            params = {"offset": offset, "live": "long-poll"}
            if cursor:
                params["cursor"] = cursor
            policy.start()
            try:
                resp = await self._request("GET", path, params=params, timeout=timeout)
            except (TetherConnectionError, ServerError):
                delay = policy.delay_after_failure()
                if delay is None:
                    raise
                await asleep(delay)
                continue
            policy.connected()
            policy.progressed()
            batch = read_batch(resp, offset)
            cursor = resp.headers.get("stream-cursor", cursor)
            offset = batch.next_offset
            if batch.data:
                yield batch
            if batch.closed and (batch.up_to_date or not batch.data):
                return


class AsyncProducer:
    """An idempotent producer on one stream (see :meth:`AsyncStreamClient.producer`).

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
        self._core = ProducerCore(producer_id, epoch, seq, auto_claim, content_type)
        self.max_retries = max_retries
        self._lock = AsyncLock()

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
        core = self._core
        return f"{type(self).__name__}(id={core.producer_id!r}, epoch={core.epoch}, seq={core.seq})"

    async def append(
        self, data: bytes | str | None = None, *, json: Any = UNSET, close: bool = False
    ) -> AppendResult:
        body, is_json = request_body(data, json)
        if not body and not close:
            raise ValueError("an append needs data, json or close=True")
        async with self._lock:
            if body and not is_json and self._core.content_type is None:
                self._core.content_type = await self._client._content_type(self.path)
            self._core.unsent.append((body, is_json, close))
            return await self._flush()

    async def close(self) -> AppendResult:
        """Close the stream (idempotently, as this producer)."""
        return await self.append(close=True)

    async def flush(self) -> AppendResult | None:
        """Send whatever earlier failures left unsent."""
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
                    await asleep(backoff.next())
                except APIError:
                    core.unsent.popleft()  # refused: never recorded, so its seq is free
                    raise
            result = append_result(resp)
            core.acknowledged()
        assert result is not None
        return result
