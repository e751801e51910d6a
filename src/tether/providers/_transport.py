"""A lean HTTP/1.1 transport for httpx: a keep-alive pool with O(1) check-out.

Why: httpcore's pool re-examines every pooled connection each time a request
starts or ends (and, for each idle one, counts the idle ones again), so with
tens of completions streaming at once a burst of requests costs O(n^2)
``select`` calls and Python frames on the event loop; that was a large share of
what the OpenAI-compatible gateway added to the time to first token. Here idle
connections wait in a per-origin LIFO list: taking one and giving it back are
constant-time, whatever the number of streams.

Scope: HTTP/1.1 over plain TCP or TLS, request bodies that httpx has in memory
(providers send JSON), fixed-length, chunked or read-to-close response bodies.
Everything else (cookies, redirects, auth, content decoding, the Response API)
stays httpx's. The providers use it only when no proxy is configured in the
environment (a transport of our own would bypass httpx's proxy support).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import httpx

#: Idle connections older than this are not reused (httpx's default, too).
KEEPALIVE_EXPIRY = 5.0
_READ_SIZE = 64 * 1024
_MAX_HEAD = 64 * 1024


class _Conn:
    __slots__ = ("idle_since", "key", "reader", "writer")

    def __init__(
        self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Still open, nothing unread (a server's close or junk), not too old."""
        return (
            now - self.idle_since < KEEPALIVE_EXPIRY
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None, float | None]:
    t = request.extensions.get("timeout") or {}
    return t.get("connect"), t.get("read"), t.get("write")


class _Body(httpx.AsyncByteStream):
    """A response body; its connection goes back to the pool once read to the end."""

    def __init__(
        self,
        transport: LeanTransport,
        conn: _Conn,
        request: httpx.Request,
        length: int | None,
        chunked: bool,
        keep: bool,
    ) -> None:
        self._transport = transport
        self._conn: _Conn | None = conn
        self._request = request
        self._length = length
        self._chunked = chunked
        self._keep = keep
        self._read_timeout = _timeouts(request)[1]
        self._done = False
        self._loop = asyncio.get_running_loop()
        #: When the read in progress began (None: no read in progress).
        self._reading_since: float | None = None
        self._deadline: asyncio.TimerHandle | None = None

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        """One network read (whatever has arrived, up to 64 KiB), with the read timeout.

        The timeout is one timer per body, re-armed only when it fires (see
        :meth:`_check_deadline`): ``asyncio.timeout`` around each read cost
        4-7 us per streamed token on uvloop.
        """
        if self._deadline is None and self._read_timeout is not None:
            self._deadline = self._loop.call_later(self._read_timeout, self._check_deadline)
        self._reading_since = self._loop.time()
        try:
            return await reader.read(_READ_SIZE)
        except _ReadTimedOut:
            raise httpx.ReadTimeout("timed out reading", request=self._request) from None
        except (ConnectionError, OSError):
            raise httpx.ReadError("connection lost", request=self._request) from None
        finally:
            self._reading_since = None

    def _check_deadline(self) -> None:
        """Fail the read in progress if it has waited the read timeout; else look again later."""
        assert self._read_timeout is not None
        since, conn = self._reading_since, self._conn
        if conn is None:
            return
        waited = 0.0 if since is None else self._loop.time() - since
        if waited >= self._read_timeout:
            conn.reader.set_exception(_ReadTimedOut())
            return
        self._deadline = self._loop.call_later(self._read_timeout - waited, self._check_deadline)

    def _closed_early(self) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError("connection closed mid-body", request=self._request)

    def __aiter__(self) -> AsyncIterator[bytes]:
        # (The framing is fixed when the head is read: pick its reader once.)
        if self._chunked:
            return self._dechunked()
        if self._length is not None:
            return self._sized(self._length)
        return self._to_close()

    def _reader(self) -> asyncio.StreamReader | None:
        """The connection's reader, or None if the body is released or already read."""
        conn = self._conn
        return None if conn is None or self._done else conn.reader

    def _finished(self) -> None:
        self._done = True
        if self._deadline is not None:
            self._deadline.cancel()

    async def _dechunked(self) -> AsyncIterator[bytes]:
        """A chunked body, de-chunked from a buffer.

        One await per network read, however many chunks it brought (an
        upstream under load sends several at once).
        """
        if (reader := self._reader()) is None:
            return
        buf = bytearray()
        while True:
            out: list[bytes] = []
            finished = _take_chunks(buf, out, self._request)
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
            if finished:
                break
            data = await self._read(reader)
            if not data:
                raise self._closed_early()
            buf += data
        self._finished()

    async def _sized(self, length: int) -> AsyncIterator[bytes]:
        """A body of ``length`` bytes (content-length)."""
        if (reader := self._reader()) is None:
            return
        left = length
        while left > 0:
            data = await self._read(reader)
            if not data:
                raise self._closed_early()
            if len(data) > left:
                raise httpx.RemoteProtocolError(
                    "more data than content-length", request=self._request
                )
            left -= len(data)
            yield data
        self._finished()

    async def _to_close(self) -> AsyncIterator[bytes]:
        """A body that ends when the server closes the connection."""
        if (reader := self._reader()) is None:
            return
        while data := await self._read(reader):
            yield data
        self._keep = False
        self._finished()

    async def aclose(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep:
            self._transport._release(conn)
        else:
            conn.close()


class Sent:
    """A request :meth:`LeanTransport.send_now` wrote; its response is read later."""

    __slots__ = ("_build", "_request", "answered", "conn", "payload")

    def __init__(self, build: Callable[[], httpx.Request], conn: _Conn, payload: bytes) -> None:
        self._build = build
        self._request: httpx.Request | None = None
        self.conn: _Conn | None = conn
        self.payload = payload
        #: The response's status once :meth:`LeanTransport.response_to` has read
        #: its head; 0 if there will be none (aborted, or the exchange failed).
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def request(self) -> httpx.Request:
        """The request as httpx's, built when first needed: after the write, not before it."""
        if self._request is None:
            self._request = self._build()
        return self._request

    def abort(self) -> None:
        """Nobody will read the response: close its connection (once it is ours)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        self._answer(0)

    def _answer(self, status: int) -> None:
        if not self.answered.done():
            self.answered.set_result(status)


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with a constant-time keep-alive pool (see the module docstring)."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_idle: int = 200) -> None:
        self._ssl: ssl.SSLContext | None = None
        self._verify = verify
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._n_idle = 0
        self._closed = False

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            v = self._verify
            self._ssl = v if isinstance(v, ssl.SSLContext) else httpx.create_ssl_context(verify=v)
        return self._ssl

    def _release(self, conn: _Conn) -> None:
        if self._closed or self._n_idle >= self._max_idle or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        self._n_idle += 1

    def _checkout(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._n_idle -= 1
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(self, request: httpx.Request, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        connect_timeout = _timeouts(request)[0]
        try:
            # (Not wait_for: on Python 3.11 it drops a cancel that lands as the
            # connection opens, and the cancelled run would carry on.)
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._context() if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                    limit=_MAX_HEAD,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError):
            raise httpx.ConnectError("could not connect", request=request) from None
        return _Conn(key, reader, writer)

    def _head(self, request: httpx.Request) -> bytes:
        return _request_head(request.method.encode("ascii"), request.url, request.headers.raw)

    def _key(self, request: httpx.Request) -> tuple[str, str, int]:
        key = _origin(request.url)
        if key is None:
            raise httpx.UnsupportedProtocol(
                f"unsupported scheme {request.url.scheme!r}", request=request
            )
        return key

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        key = self._key(request)
        payload = self._head(request) + await request.aread()
        conn = self._checkout(key)
        if conn is not None:
            try:
                return await self._exchange(request, conn, payload)
            except _StaleConnection:
                pass  # the server closed a pooled connection before answering: once more, afresh
        return await self._afresh(request, key, payload)

    def send_now(
        self,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: bytes,
        build: Callable[[], httpx.Request],
    ) -> Sent | None:
        """POST ``content`` at once on an idle pooled connection; None if there is none.

        No await: the gateway starts its upstream request this way within the
        handler's own step, instead of in a task that runs an iteration later.
        The bytes are written from ``url`` and ``headers`` directly; ``build``
        makes the same request as an ``httpx.Request`` once one is needed (to
        read the response, or to report an error): building it first took as
        long as the rest of the write. Read the response with
        :meth:`response_to`, or :meth:`Sent.abort` it.
        """
        key = _origin(url)
        if self._closed or key is None:
            return None
        conn = self._checkout(key)
        if conn is None:
            return None
        payload = _post_head(url, headers, len(content)) + content
        try:
            conn.writer.write(payload)
        except (ConnectionError, OSError, RuntimeError):
            conn.close()
            return None
        return Sent(build, conn, payload)

    async def response_to(self, sent: Sent) -> httpx.Response:
        """The response to a request of :meth:`send_now` (sent again afresh if stale)."""
        try:
            response = await self._response_to(sent)
        except BaseException:
            sent._answer(0)
            raise
        sent._answer(response.status_code)
        return response

    async def _response_to(self, sent: Sent) -> httpx.Response:
        request, conn, sent.conn = sent.request, sent.conn, None
        if conn is None:
            raise httpx.ReadError("the request was aborted", request=request)
        try:
            return await self._exchange(request, conn, sent.payload, written=True)
        except _StaleConnection:
            pass
        return await self._afresh(request, conn.key, sent.payload)

    async def _afresh(
        self, request: httpx.Request, key: tuple[str, str, int], payload: bytes
    ) -> httpx.Response:
        conn = await self._connect(request, key)
        try:
            return await self._exchange(request, conn, payload)
        except _StaleConnection:
            raise httpx.RemoteProtocolError(
                "connection closed before the response", request=request
            ) from None

    async def _exchange(
        self, request: httpx.Request, conn: _Conn, payload: bytes, *, written: bool = False
    ) -> httpx.Response:
        _, read_timeout, write_timeout = _timeouts(request)
        await _send(request, conn, None if written else payload, write_timeout)
        status, version, headers = await _receive_head(request, conn, read_timeout)
        try:
            length, chunked, keep = _framing(request, status, version, headers)
        except httpx.RemoteProtocolError:
            conn.close()
            raise
        stream = _Body(self, conn, request, length, chunked, keep)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": version},
        )

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._n_idle = 0


class _ReadTimedOut(Exception):
    """A body read waited the read timeout (set on the connection's reader by its timer)."""


class _StaleConnection(Exception):
    """Nothing came back: the connection was dead before this request used it."""


def _origin(url: httpx.URL) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL: which pooled connections can carry it."""
    scheme = url.scheme
    if scheme not in ("http", "https"):
        return None
    return (scheme, url.host, url.port or (443 if scheme == "https" else 80))


def _request_head(method: bytes, url: httpx.URL, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A request's head: its request line, then one line per header."""
    lines = [method + b" " + (url.raw_path or b"/") + b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _post_head(url: httpx.URL, headers: Mapping[str, str], length: int) -> bytes:
    """A POST's head as httpx writes it: Host, ``headers``, Content-Length (unless given)."""
    given = {name.lower() for name in headers}
    raw = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
    if "host" not in given:
        raw.insert(0, (b"Host", url.netloc))
    if "content-length" not in given:
        raw.append((b"Content-Length", b"%d" % length))
    return _request_head(b"POST", url, raw)


async def _send(
    request: httpx.Request, conn: _Conn, payload: bytes | None, write_timeout: float | None
) -> None:
    """Write ``payload`` (None: already written) and drain it, with the write timeout.

    On failure the connection is closed; _StaleConnection if it was dead.
    """
    try:
        if payload is not None:
            conn.writer.write(payload)
        async with asyncio.timeout(write_timeout):  # (wait_for would start a task)
            await conn.writer.drain()
    except TimeoutError:
        conn.close()
        raise httpx.WriteTimeout("timed out writing", request=request) from None
    except (ConnectionError, OSError):
        conn.close()
        raise _StaleConnection from None


async def _receive_head(
    request: httpx.Request, conn: _Conn, read_timeout: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The response's head (after any 1xx), with the read timeout for each.

    On failure the connection is closed; _StaleConnection if nothing came back.
    """
    try:
        while True:
            try:
                async with asyncio.timeout(read_timeout):
                    head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as err:
                if not err.partial:
                    raise _StaleConnection from None
                raise httpx.RemoteProtocolError(
                    "connection closed mid-head", request=request
                ) from None
            except asyncio.LimitOverrunError:
                raise httpx.RemoteProtocolError(
                    "response head too large", request=request
                ) from None
            status, version, headers = _parse_head(head, request)
            if status >= 200 or status == 101:
                return status, version, headers  # 1xx (100 Continue, 103 Early Hints) precede it
    except TimeoutError:
        conn.close()
        raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
    except (ConnectionError, OSError):
        conn.close()
        raise _StaleConnection from None
    except BaseException:
        conn.close()
        raise


def _framing(
    request: httpx.Request, status: int, version: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int | None, bool, bool]:
    """How the response's body is framed: (length, chunked, keep the connection).

    ``length`` is None for a chunked or read-to-close body; RemoteProtocolError
    on a bad content-length.
    """
    length: int | None = None
    chunked = False
    keep = version == b"HTTP/1.1"
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lname == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise httpx.RemoteProtocolError("bad content-length", request=request) from None
        elif lname == b"connection":
            v = value.lower()
            keep = b"close" not in v and (keep or b"keep-alive" in v)
    if request.method == "HEAD" or status in (204, 304):
        length, chunked = 0, False
    elif chunked:
        length = None
    if request.headers.get("connection", "").lower() == "close":
        keep = False
    return length, chunked, keep


def _take_chunks(buf: bytearray, out: list[bytes], request: httpx.Request) -> bool:
    """Move the data of the complete chunks at the start of ``buf`` (a chunked body) to ``out``.

    True if the body ended: the last chunk, its trailers (if any) and the
    empty line were all there. What is left in ``buf`` is an incomplete
    chunk, for the next read to complete. (``out`` is the caller's, not a
    returned pair: this runs once per network read.)
    """
    while (i := buf.find(b"\r\n")) >= 0:
        try:
            size = int(buf[:i].split(b";", 1)[0].strip(), 16)  # (int() takes a bytearray)
        except ValueError:
            raise httpx.RemoteProtocolError("bad chunk size", request=request) from None
        if size == 0:
            # The last chunk, then trailers (if any) and an empty line.
            end = buf.find(b"\r\n\r\n", i)
            if end < 0:
                return False
            del buf[: end + 4]
            return True
        if len(buf) < i + 4 + size:
            break
        out.append(bytes(buf[i + 2 : i + 2 + size]))
        del buf[: i + 4 + size]
    return False


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    try:
        version, status = parts[0], int(parts[1])
    except (IndexError, ValueError):
        raise httpx.RemoteProtocolError("bad status line", request=request) from None
    if not version.startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError("not an HTTP/1.x response", request=request)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise httpx.RemoteProtocolError("bad header line", request=request)
        headers.append((name.strip(), value.strip()))
    return status, version, headers
