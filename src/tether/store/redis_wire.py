"""A Redis connection opened by redis-py, then read and written by tether directly.

redis-py costs about 100 µs of CPU per command or Pub/Sub message in tether
(pool, locks, timeouts, its parser's layers) where the work itself is a few
µs; the two paths that carry one command or message per append, the appends
(``redis_pipeline.py``) and the notifications (``redis_subscriber.py``), use a
:class:`RawConnection` instead. redis-py still opens it, so TLS, AUTH, SELECT
and the client's name are what the URL says; then its transport is taken over:
commands are packed by hiredis and written as they are, and replies are parsed
by hiredis in ``data_received`` and handed on in the order they came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError


def pack(*parts: str | bytes | int) -> bytes:
    """One command in RESP, packed by hiredis (in C)."""
    return hiredis.pack_command(parts)  # type: ignore[arg-type]  # (its stub: a 1-tuple)


class RawConnection(asyncio.Protocol):
    """One connection: ``write`` packed commands; replies go to ``on_replies``.

    Error replies are handed on as ``redis.exceptions.ResponseError`` values,
    not raised. ``on_lost`` is called once if the connection ends by itself.
    """

    def __init__(
        self,
        conn: Any,
        on_replies: Callable[[list[Any]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._conn = conn
        # (redis-py keeps no public handle on its transport.)
        self._transport: asyncio.Transport = conn._writer.transport
        #: redis-py's protocol, told when the connection ends so its streams close.
        self._previous = self._transport.get_protocol()
        self._on_replies = on_replies
        self._on_lost: Callable[[], None] | None = on_lost
        self._closed = False
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._transport.set_protocol(self)

    @classmethod
    async def open(
        cls,
        pool: aioredis.ConnectionPool,
        on_replies: Callable[[list[Any]], None],
        on_lost: Callable[[], None],
    ) -> RawConnection:
        """Connect as the pool's connections do (bounded by the pool's connect timeout)."""
        conn = pool.make_connection()
        try:
            await conn.connect()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return cls(conn, on_replies, on_lost)

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        reader = self._reader
        reader.feed(data)
        replies = []
        while (reply := reader.gets()) is not False:
            replies.append(reply)
        if replies:
            self._on_replies(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._previous.connection_lost(exc)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()

    def close(self) -> None:
        """Close at once (no more replies, ``on_lost`` is not called); then :meth:`wait_closed`."""
        self._closed = True
        self._on_lost = None
        self._transport.close()

    async def wait_closed(self) -> None:
        """Let redis-py forget the connection too."""
        await self._conn.disconnect(nowait=True)
