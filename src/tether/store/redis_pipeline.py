"""The Redis store's hot path: function calls pipelined on one dedicated connection.

Why: redis-py spends about 100 µs of CPU per command in tether (taking a
connection from the pool, its locks and timeouts, reply parsing through its
layers) where the round trip itself costs about 40 µs of client CPU; an append
is one function call, so that overhead was most of what an append on Redis cost
beyond the HTTP request (the profile is in the closing note of issue 24).

How: :class:`Pipeline` holds one :class:`~tether.store.redis_wire.RawConnection`,
writes the commands made in one event-loop iteration in one write, and
resolves their futures in order as the replies are parsed. Appends
made at once (many producers) thus share round trips, as group commit shares
SQLite's transactions. Redis runs one connection's commands in the order they
were written, so appends are applied in the order they were made, per stream
and overall; a command cancelled before it was written is not sent.

A new connection loads the store's function library first (``FUNCTION LOAD
REPLACE``), so an FCALL never meets a Redis that lost it (restarted without
persistence, or ``FUNCTION FLUSH``). A command not answered within the timeout,
a "Function not found" answer (the library was lost since) or a lost
connection drops the connection, failing every command in flight with
``ConnectionError`` (the store answers 503); the next command opens a new one.
Nothing is retried: a function whose reply was lost may have run.

The timeout is one timer for the whole connection, not one per command: the
replies come in the order the commands were written, so only the oldest
command in flight can be the first late one. (A timer per command, an
``asyncio.timeout`` around each append, was 3 to 4% of the server's CPU with
64 producers appending.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tether.store.redis_scripts import FUNCTION_NOT_FOUND, Library
from tether.store.redis_wire import RawConnection, pack


class Pipeline:
    """Function calls on one connection of their own, several in flight at a time."""

    def __init__(self, pool: aioredis.ConnectionPool, library: Library, timeout: float) -> None:
        """``library``: the functions called; ``timeout``: seconds a command may take."""
        self._pool = pool
        self._library = library
        self._timeout = timeout
        self._raw: RawConnection | None = None
        #: Commands made this loop iteration, not yet written: (answer, packed command).
        self._unsent: list[tuple[asyncio.Future[Any], bytes]] = []
        #: Written and waiting for their replies, in order, each with its deadline.
        self._inflight: deque[tuple[asyncio.Future[Any], float]] = deque()
        #: Fires at the oldest command's deadline while commands are in flight.
        self._watchdog: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def fcall(self, function: str, args: list[str | bytes]) -> Any:
        """Call ``function`` of the library with no keys and ``args``; its reply
        (ResponseError raised)."""
        if self._raw is None:
            await self._connect()
        return await self._send(pack("FCALL", self._library.function(function), 0, *args))

    def _send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append((answer, packed))
        return answer

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._raw is None:
            for answer, _ in unsent:
                if not answer.done():
                    answer.set_exception(RedisConnectionError("the Redis connection was lost"))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        inflight = self._inflight
        out = []
        for answer, packed in unsent:
            if not answer.done():  # (cancelled before it was written: never sent)
                inflight.append((answer, deadline))
                out.append(packed)
        self._raw.write(b"".join(out))
        if inflight and self._watchdog is None:
            self._watchdog = loop.call_at(inflight[0][1], self._overdue)

    def _overdue(self) -> None:
        """The oldest command's deadline: drop the connection if it is still unanswered."""
        self._watchdog = None
        if not self._inflight:
            return
        loop = asyncio.get_running_loop()
        deadline = self._inflight[0][1]
        if loop.time() >= deadline:
            self._drop("Redis did not answer in time")
        else:
            self._watchdog = loop.call_at(deadline, self._overdue)

    def _replies(self, replies: list[Any]) -> None:
        inflight = self._inflight
        for reply in replies:
            if not inflight:
                self._drop("Redis answered a command that was not asked")
                return
            answer, _ = inflight.popleft()
            if isinstance(reply, ResponseError):
                if FUNCTION_NOT_FOUND in str(reply):
                    if not answer.done():
                        answer.set_exception(RedisConnectionError("Redis lost tether's functions"))
                    self._drop("Redis lost tether's functions")
                    return
                if not answer.done():
                    answer.set_exception(reply)
            elif not answer.done():
                answer.set_result(reply)

    async def _connect(self) -> None:
        """Open the connection (once, however many callers wait for it)."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._open(), name="tether-redis-hot-path")
        task = self._connecting
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> None:
        async with asyncio.timeout(self._timeout):
            raw = await RawConnection.open(self._pool, self._replies, self._lost)
            self._raw = raw
            try:
                await self._send(pack("FUNCTION", "LOAD", "REPLACE", self._library.code))
            except BaseException:
                self._drop("the functions could not be loaded")
                raise

    def _lost(self) -> None:
        self._drop("the Redis connection was lost")

    def _drop(self, why: str) -> None:
        """Close the connection and fail every command in flight on it."""
        raw, self._raw = self._raw, None
        if raw is None:
            return
        inflight, self._inflight = self._inflight, deque()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for answer, _ in inflight:
            if not answer.done():
                answer.set_exception(RedisConnectionError(why))
        raw.close()
        task = asyncio.get_running_loop().create_task(raw.wait_closed())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
            self._connecting = None
        self._drop("the store is closed")
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
