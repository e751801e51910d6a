"""Connection limits and timeouts for the HTTP server (uvicorn's httptools protocol).

uvicorn closes a connection on its own only once it has answered a request and
the connection then stays idle (``timeout_keep_alive``, a timer armed and
cancelled for every request: these rules time idle connections instead, with
the rest, as :attr:`ConnectionLimits.keep_alive_timeout`). A client that connects
and sends nothing, or sends a request head or body slowly, keeps its socket and
file descriptor for as long as it likes, so a flood of them exhausts the
descriptors and locks everyone else out. :class:`GuardedHttpToolsProtocol` adds:

- a head timeout: a request head must arrive whole within ``header_timeout``
  seconds of the connection, or of the first byte of a keep-alive request;
- a body timeout: a request body that gets no byte for ``body_timeout`` seconds,
  or averages less than ``body_min_rate`` bytes/s once its first ``body_timeout``
  seconds are over, is answered 408 and its connection closed (time during which
  the server itself stopped reading does not count);
- a cap on open connections (WebSockets included): at the cap, a new connection
  closes the connection that has waited longest for a request head (an idle
  keep-alive, or a head still arriving) and is refused with 503 only when every
  connection has a request in flight.

A connection whose request has been received (an SSE or long-poll response, a
WebSocket) is never closed by these rules. Each request's scope also carries,
under ``scope["extensions"]["tether.disconnect"]``, a future resolved when its
client goes: a live reader waits on it rather than on a task of its own that
reads ``receive()`` only to learn of the disconnect (about 1 KiB per reader).

Timeouts are checked by :meth:`ConnectionGuard.sweep`, once a second, so they
fire up to a second late; on the hot path a connection does a few dict
operations per request and one addition per body chunk.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from tether.streams.app import DISCONNECT

log = logging.getLogger(__name__)

#: Descriptors kept for everything but client connections (the store's files, logs,
#: the event loop's own) before the share for upstream sockets is taken.
RESERVED_FDS = 128
#: Stands for an unlimited descriptor limit (Linux's default ``fs.nr_open``).
UNLIMITED_FDS = 1 << 20
#: The default cap's ceiling, whatever the descriptors: containers often allow a
#: million files, and 65,536 SSE readers already take about 1 GiB (15 KiB each,
#: benchmarks/RESULTS.md).
MAX_DEFAULT_CONNECTIONS = 65_536
#: Seconds between two summaries of the connections closed by these rules.
REPORT_INTERVAL = 60.0


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the limit in force.

    The soft limit is often 1,024 while the hard one allows far more; every client
    connection is a descriptor, so the cap on connections is sized from this figure.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. macOS refuses an unlimited soft limit
            pass
    return UNLIMITED_FDS if soft == resource.RLIM_INFINITY else soft


def default_max_connections(fd_limit: int) -> int:
    """Three quarters of the descriptors left after :data:`RESERVED_FDS`, up to a ceiling.

    The last quarter is headroom for sockets that grow with load but are not
    client connections: upstream providers, Redis, the runs' own HTTP clients.
    """
    return max(1, min(MAX_DEFAULT_CONNECTIONS, (fd_limit - RESERVED_FDS) * 3 // 4))


@dataclass(frozen=True)
class ConnectionLimits:
    """What ``tether serve --max-connections/--header-timeout/--body-*`` set."""

    max_connections: int
    header_timeout: float = 10.0
    #: Seconds a request body may go without a byte. Also the grace before
    #: ``body_min_rate`` applies, so a client that pauses once is not cut off.
    body_timeout: float = 30.0
    #: Bytes/s a body must average after its grace; 0 for no minimum. 4 KiB/s (32
    #: kbit/s) is below any mobile uplink in use, and still costs a client that
    #: holds a connection this way real bandwidth.
    body_min_rate: int = 4096
    #: Seconds an answered keep-alive connection may wait for its next request
    #: (uvicorn's default; never longer than ``header_timeout``).
    keep_alive_timeout: float = 5.0


class _Phase(enum.Enum):
    """Where a connection stands, as far as these rules are concerned."""

    HEAD = "waits for a request head, or has part of one"
    IDLE = "keep-alive: answered, and nothing of the next request yet"
    BODY = "has a request head, and its body is still arriving"
    BUSY = "has a whole request: being answered (SSE, long-poll, WebSocket...)"
    GONE = "closed, or handed over to the WebSocket protocol"


# Module-level names for the members: looked up on the class, they made a request's
# phase changes a third slower (2.8 against 1.8 us for the five of them).
_HEAD, _IDLE, _BODY, _BUSY, _GONE = _Phase


def _listed(event: asyncio.Event) -> None:
    """Give ``event`` a list of waiters in place of its deque.

    uvicorn gives every connection two Events (its flow control, its request's
    messages) and each holds a deque: 760 bytes even when empty, where a list
    takes 56. uvicorn has one waiter per Event at most, and an Event only
    appends, removes and iterates its waiters. Measured with a tracemalloc diff
    over 2,000 idle SSE readers: the two deques were the largest single item,
    1.5 KiB of 13 KiB per reader.
    """
    event._waiters = []  # type: ignore[assignment]


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests, as a list (760 bytes a deque, 56 a list).

    uvicorn only calls ``appendleft``, ``pop`` and truth on it, and a connection
    seldom has more than one request queued, so inserting at 0 costs nothing.
    """

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _Standing:
    """A connection's phase, and the clocks of the body it is receiving.

    One attribute on the protocol, not one each: uvicorn's protocol has 28, and
    CPython shares the keys of a class's instance dicts only up to 30; past that,
    every connection had a dict of its own, 1.3 KiB more per SSE reader (measured).
    """

    __slots__ = ("body_checked", "body_moved_at", "body_received", "phase", "rate_base",
                 "rate_since")  # fmt: skip

    def __init__(self) -> None:
        self.phase = _GONE
        #: Body bytes received since the head; the only per-chunk work.
        self.body_received = 0
        #: ``body_received`` at the last check, and when it last grew.
        self.body_checked = 0
        self.body_moved_at = 0.0
        #: Start of the window the minimum rate is measured over, and the bytes then.
        self.rate_since = 0.0
        self.rate_base = 0


def _error_response(status: int, code: str, message: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response carrying tether's JSON error body, that closes."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (
        b"content-type: application/json\r\ncache-control: no-store\r\n"
        + extra
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    return STATUS_LINE[status] + head + body


_BODY_TIMEOUT = _error_response(408, "request_timeout", "the request body did not arrive in time")
_TOO_MANY = _error_response(
    503, "too_many_connections", "the server has no connection to spare; retry shortly",
    b"retry-after: 1\r\n",
)  # fmt: skip


class ConnectionGuard:
    """The limits, and the connections that these rules may close, for one server.

    ``waiting`` (HEAD) and ``idle`` (IDLE) hold the connections waiting for a head in
    the order they started waiting (the first one is the oldest), with that time, so
    the sweep and the cap look at their fronts only; ``bodies`` holds those whose body
    is arriving.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.waiting: OrderedDict[GuardedHttpToolsProtocol, float] = OrderedDict()
        self.idle: OrderedDict[GuardedHttpToolsProtocol, float] = OrderedDict()
        self.bodies: set[GuardedHttpToolsProtocol] = set()
        self.closed: Counter[str] = Counter()
        self._next_report = 0.0

    def protocol_class(self) -> type[GuardedHttpToolsProtocol]:
        """The protocol class to give ``uvicorn.Config(http=...)``, bound to this guard.

        uvicorn builds each connection's protocol from a class and its own arguments,
        so the guard travels as a class attribute of a subclass made for it.
        """
        return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": self})

    def make_room(self, open_connections: int) -> bool:
        """Whether a new connection may open; at the cap, close the oldest waiting one."""
        if open_connections < self.limits.max_connections:
            return True
        fronts = [next(iter(queue.items())) for queue in (self.waiting, self.idle) if queue]
        if not fronts:
            self.closed["refused (all busy)"] += 1
            return False
        oldest, _ = min(fronts, key=lambda front: front[1])
        oldest.drop()
        self.closed["evicted"] += 1
        return True

    def sweep(self, now: float) -> None:
        """Close the connections whose head or body is late, or that have been idle
        too long (called once a second)."""
        limits = self.limits
        for oldest in _expired(self.waiting, now - limits.header_timeout):
            oldest.drop()
            self.closed["head timeout"] += 1
        # (Not counted: closing an idle keep-alive is the ordinary end of a connection.)
        idle_for = min(limits.keep_alive_timeout, limits.header_timeout)
        for oldest in _expired(self.idle, now - idle_for):
            oldest.drop()
        for connection in list(self.bodies):
            if connection.body_is_late(now):
                connection.drop(_BODY_TIMEOUT)
                self.closed["body timeout"] += 1
        self._report(now)

    def _report(self, now: float) -> None:
        """Log what these rules closed, at most once per :data:`REPORT_INTERVAL`."""
        if not self.closed or now < self._next_report:
            return
        level = logging.WARNING if "refused (all busy)" in self.closed else logging.INFO
        counts = ", ".join(f"{n} {why}" for why, n in sorted(self.closed.items()))
        log.log(level, "connections closed: %s (cap %d)", counts, self.limits.max_connections)
        self.closed.clear()
        self._next_report = now + REPORT_INTERVAL


def _expired(
    queue: OrderedDict[GuardedHttpToolsProtocol, float], cutoff: float
) -> Iterator[GuardedHttpToolsProtocol]:
    """The connections of ``queue`` that started waiting at ``cutoff`` or before, oldest
    first (each leaves the queue when dropped, so the front moves on)."""
    while queue:
        oldest, since = next(iter(queue.items()))
        if since > cutoff:
            return
        yield oldest


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the head and body timeouts and the cap.

    Every phase change goes through :meth:`_enter`, which keeps the guard's
    collections in step; the phase follows uvicorn's own callbacks.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._standing = _Standing()
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    # -- uvicorn's callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        admitted = self.guard.make_room(len(self.connections))
        super().connection_made(transport)
        _listed(self.flow._is_writable_event)
        if admitted:
            self._enter(_HEAD)
        else:
            self.drop(_TOO_MANY)

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(_GONE)
        super().connection_lost(exc)
        self._gone()

    def on_message_begin(self) -> None:
        # The first byte of a request: on a keep-alive connection, its head's time starts.
        if self._standing.phase is _IDLE:
            self._enter(_HEAD)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # uvicorn makes no cycle for a WebSocket upgrade; the upgrade follows at once.
        started = self.cycle is not None and self.cycle.scope is self.scope
        if started:
            _listed(self.cycle.message_event)  # (its task has not run yet)
            extensions = self.scope.setdefault("extensions", {})
            # The future itself (ASGI's extensions are dicts: no dict a request), one a
            # request: a reader may cancel it, or leave a callback on it, when it ends.
            extensions[DISCONNECT] = self.loop.create_future()  # type: ignore[assignment]
        self._enter(_BODY if started else _BUSY)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._standing.body_received += len(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._standing.phase is _BODY:
            # Answered before its body was all in (a 413, say): the connection waits again.
            self._enter(_IDLE if self.cycle.response_complete else _BUSY)

    def on_response_complete(self) -> None:
        # uvicorn's steps here but its keep-alive timer (a call_later and, on the next
        # request, a cancel: 1.6 µs a request): the sweep times idle connections.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request starts
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._standing.phase is _BUSY and self.cycle.response_complete:
            self._enter(_IDLE)

    def handle_websocket_upgrade(self) -> None:
        self._enter(_GONE)  # the WebSocket protocol counts itself in ``connections``
        super().handle_websocket_upgrade()

    # -- the rules --------------------------------------------------------------

    def drop(self, response: bytes | None = None) -> None:
        """Close this connection now, after ``response`` if given; it stops counting."""
        self._enter(_GONE)
        self.connections.discard(self)
        if response is not None and not self.transport.is_closing():
            self.transport.write(response)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # As uvicorn does when a client goes: the app's receive() sees a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
            self._gone()
        self.transport.close()

    def _gone(self) -> None:
        """Resolve the running request's disconnect future, as uvicorn marks it disconnected."""
        cycle = self.cycle
        if cycle is not None and cycle.disconnected:
            extensions: dict[str, Any] = cycle.scope.get("extensions") or {}
            gone: asyncio.Future[None] | None = extensions.get(DISCONNECT)
            if gone is not None and not gone.done():
                gone.set_result(None)

    def body_is_late(self, now: float) -> bool:
        """Whether the body being received has stalled, or is slower than the minimum."""
        limits = self.guard.limits
        cycle = self.cycle
        body = self._standing
        if body.body_received != body.body_checked:
            body.body_checked = body.body_received
            body.body_moved_at = now
        if (
            self.flow.read_paused
            or cycle.waiting_for_100_continue
            or (cycle.response_started and not cycle.response_complete)
        ):
            # The server stopped reading, has not asked for the body yet (the client
            # sent "Expect: 100-continue"), or is answering already: not the client's delay.
            body.body_moved_at = body.rate_since = now
            body.rate_base = body.body_received
            return False
        if now - body.body_moved_at >= limits.body_timeout:
            return True
        owed = limits.body_min_rate * (now - body.rate_since - limits.body_timeout)
        return body.body_received - body.rate_base < owed

    def _enter(self, phase: _Phase) -> None:
        """Move to ``phase``, keeping the guard's collections in step."""
        guard = self.guard
        standing = self._standing
        old = standing.phase
        if old is _HEAD:
            del guard.waiting[self]
        elif old is _IDLE:
            del guard.idle[self]
        elif old is _BODY:
            guard.bodies.discard(self)
        standing.phase = phase
        if phase is _HEAD:
            guard.waiting[self] = self.loop.time()
        elif phase is _IDLE:
            guard.idle[self] = self.loop.time()
        elif phase is _BODY:
            now = self.loop.time()
            standing.body_received = standing.body_checked = standing.rate_base = 0
            standing.body_moved_at = standing.rate_since = now
            guard.bodies.add(self)
