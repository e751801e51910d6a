"""Redis store: the log in a Redis server that several tether processes share.

``tether serve --store redis://HOST:PORT/DB`` (also ``rediss://`` for TLS,
``?prefix=NAME:`` to keep several deployments apart in one database (default
``tether:``), and redis-py's own options such as ``?max_connections=N``, the
most connections one process opens, 32 by default: the appends' own, the
notifications' own, and a pool of the rest). It needs a standalone
Redis >= 7.0 (for Redis Functions; tested with 7.0; or a Sentinel-managed
primary), not Redis Cluster: its functions reach keys they discover as they go
(a fork's source, a cascade of sources), which Cluster does not allow.

Semantics are those of ``local.py``, error for error: any number of replicas
may serve the same streams, because every decision is taken inside Redis.

Keys (``P`` is the prefix)
--------------------------
``P paths``            hash: stream path -> internal stream id (live and soft-deleted).
``P nextid``           counter for internal ids, which are never reused, so a
                       path that is deleted and created again never sees old data.
``P s:<id>``           hash: the stream's metadata (path, content type and its
                       media type, tail, closed, TTL / Expires-At, last access,
                       fork source and offset, Stream-Seq, closed-by, soft-deleted
                       flag, number of forks reading through it).
``P d:<id>``           Redis Stream: the data, one entry per row as in ``local.py``
                       (one per JSON message, one per byte append).
``P pr:<id>``          hash: producer id -> ``epoch:seq``.
``P exp``              sorted set: stream id scored by the time it expires.
``P r:<namespace>``    hash: the records (key -> value) of one namespace.
``P tail``             the Pub/Sub channel of append / delete notifications.
``P l:<name>``         string: a lease's owner, expiring with the lease (PX),
                       so a dead holder's lease lapses on Redis's clock.
``P x:<name>``         sorted set: an index's entries (its key, a NUL, the member), in byte order.
``P xk:<name>``        hash: an index's member -> key.

Why a Redis Stream for the data: it is an append-only log ordered by entry ID,
and entry IDs may be given explicitly. A row that starts at position ``s`` gets
the ID ``s-1`` (``0-0`` is not a valid ID), so positions *are* the index: the
row holding a position is one ``XREVRANGE <pos>-1 - COUNT 1``, the rows after it
one ``XRANGE``, and Redis keeps consecutive entries delta-compressed in
listpacks. Each entry holds its end, the start and end of the append it came
from (so a sub-offset fork finds its append in O(1)) and the data. A sorted
set would need the data elsewhere (members must be unique), and a list has no
search by position.

Atomicity
---------
Every operation is one Lua function (``lua/*.lua``, one Redis Functions
library built by ``redis_scripts.py``, loaded when the store opens and again by
any connection that finds it gone, e.g. after a restart of a Redis that keeps
no data; the leases' and indexes' small scripts run with EVALSHA): create (with the
fork's reference count), append (content type, idempotent producer, closure,
Stream-Seq, data, tail and producer state together), read and head (which
expire a stream that is due, and for read renew a sliding TTL), delete (soft
while forks read through it, cascading when the last fork goes) and the expiry
sweep. Redis runs one function at a time, so replicas never interleave, and each
function checks everything before it writes anything, so a refusal writes
nothing. A function answers ``{status, ...}``; ``redis_scripts.raise_for`` maps the
status to the ``errors`` class ``local.py`` raises in the same case, with the
same message.

Appends, the hot path, do not go through redis-py's pool: they are pipelined on
one connection of their own (``redis_pipeline.py``), where the appends made at
once share round trips and are applied in the order they were made; every
other operation takes a pooled connection.

Positions are ``local.py``'s: bytes for byte streams, messages for JSON
streams; a fork continues its source's positions and reads positions below its
fork offset through its source (and that source's source...), never copying.

Time
----
By default the scripts read Redis's clock (``TIME``), so replicas agree on when
a stream expires whatever their own clocks say; tests pass a ``clock``. A
sliding TTL is renewed by every read and append (the new expiry goes into
``P exp``), not by head. Expiry is enforced when a stream is touched and by a
sweeper task in every replica that expires what ``P exp`` says is due (the
sweep is a script too, so replicas sweeping at once do no harm). Redis key
expiry is not used: an expired stream that forks still read through must
become soft-deleted (410), not vanish.

Live tailing
------------
Each append script PUBLISHes one message on ``P tail``, and each RedisStore
runs one subscriber (``redis_subscriber.py``) that feeds ``self.notifier``,
the same ``TailNotifier`` chain as the local stores, so a process holds one
Redis connection for all its readers.

Redis unreachable
-----------------
Every operation then raises ``errors.BackendUnavailable`` (HTTP 503 with
Retry-After), as do Redis's own "not now" errors (LOADING, BUSY, OOM, MISCONF,
READONLY...). Commands are never retried by the client: a script whose reply
was lost may have run, and running an append twice would duplicate it. So
nothing is acknowledged that was not stored; an append answered 503 may
nevertheless have been stored, which idempotent producers make safe to retry.
Pooled connections are checked when taken from the pool, so the first
operation after Redis comes back succeeds, without restarting tether.

Durability is Redis's: an append is acknowledged once Redis has applied it in
memory. For the SQLite store's guarantee (survives the server being killed)
run Redis with ``appendonly yes`` and ``appendfsync always`` (``everysec`` may
lose up to a second of acknowledged appends if Redis itself crashes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tether.observability.metrics import StoreMeters
from tether.store.base import (
    AppendRequest,
    AppendResult,
    CreateRequest,
    CreateResult,
    ReadResult,
    Store,
    StreamMeta,
    is_json,
    media_type,
)
from tether.store.errors import (
    BackendUnavailable,
    StreamNotFound,
)
from tether.store.redis_pipeline import Pipeline
from tether.store.redis_scripts import (
    FUNCTION_NOT_FOUND,
    Status,
    raise_for,
    script_texts,
    stream_library,
)
from tether.store.redis_subscriber import RedisTailNotifier, Subscriber

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "tether:"
#: Appends up to this many bytes travel inside their notification.
INLINE_MAX = 64 * 1024
#: How often each replica sweeps for expired streams, in seconds.
SWEEP_INTERVAL = 5.0
#: Streams one sweep script expires at most (it runs again while there are more).
SWEEP_BATCH = 100
#: Connections one process opens to Redis at most (``?max_connections=`` in the URL).
MAX_CONNECTIONS = 32

# Errors Redis answers while it cannot serve (loading, a script too long, out of
# memory, persistence failing, a replica after failover...): transient.
#: Characters HSCAN's MATCH reads as a pattern, escaped to match themselves.
_GLOB_SPECIAL = re.compile(r"[\\*?\[\]]")

_UNAVAILABLE_PREFIXES = (
    "LOADING", "BUSY", "OOM", "MISCONF", "READONLY", "MASTERDOWN", "NOREPLICAS",
    "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT",
)  # fmt: skip


# With maintenance notifications on (redis-py's "auto" default), the pool skips
# its check that an idle connection is still open, so after a Redis restart each
# pooled connection would fail one request; we serve standalone Redis, which
# sends no such notifications anyway.
def _pool_options() -> dict[str, Any]:
    try:  # redis-py >= 7
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # pragma: no cover - older redis-py has no such feature
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


_POOL_OPTIONS = _pool_options()


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _text(value: bytes) -> str:
    return value.decode()


def _parse_meta(flat: Sequence[bytes]) -> StreamMeta:
    h = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}

    def opt(key: bytes) -> str | None:
        v = h.get(key)
        return None if v is None else v.decode()

    cb = opt(b"cb")
    return StreamMeta(
        id=int(h[b"id"]),
        path=_text(h[b"path"]),
        content_type=_text(h[b"ct"]),
        created_at=float(h[b"created"]),
        tail=int(h[b"tail"]),
        closed=h[b"closed"] == b"1",
        ttl=None if b"ttl" not in h else int(h[b"ttl"]),
        expires_at=None if b"exp" not in h else float(h[b"exp"]),
        accessed_at=float(h[b"acc"]),
        fork_of=None if b"fork_of" not in h else int(h[b"fork_of"]),
        fork_offset=int(h[b"fork_off"]),
        last_seq=opt(b"last_seq"),
        closed_by=None if cb is None else (cb, int(h[b"cb_epoch"]), int(h[b"cb_seq"])),
        soft_deleted=h[b"soft"] == b"1",
        refs=int(h[b"refs"]),
    )


def split_url(url: str) -> tuple[str, str]:
    """(redis-py URL, key prefix): ``?prefix=`` is ours, the rest is redis-py's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for k, v in query:
        if k == "prefix":
            prefix = v
        else:
            rest.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class RedisStore(Store):
    exclusive = False  # replicas share it

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str | None = None,
        clock: Callable[[], float] | None = None,
        inline_max: int = INLINE_MAX,
        sweep_interval: float = SWEEP_INTERVAL,
        connect_timeout: float = 2.0,
        socket_timeout: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._url, url_prefix = split_url(url)
        self.prefix = url_prefix if prefix is None else prefix
        self._clock = clock
        self._inline_max = inline_max
        self._sweep_interval = sweep_interval
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._max_connections = max_connections
        self._redis: aioredis.Redis | None = None
        #: The stream operations (``redis_scripts.stream_library``).
        self._library = stream_library(inline_max)
        #: The keyed scripts, by name.
        self._scripts: dict[str, Any] = {}
        #: The appends' own connection, pipelined (``redis_pipeline.py``).
        self._hot: Pipeline | None = None
        self._subscriber: Subscriber | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.notifier: RedisTailNotifier = RedisTailNotifier()
        #: Appends and their round trips (an append's commit) under "redis".
        self._meters = StoreMeters("redis")

    def __repr__(self) -> str:
        return f"RedisStore({redact(self._url)!r}, prefix={self.prefix!r})"

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Connect, subscribe to notifications and start the sweeper.

        Raises BackendUnavailable if Redis cannot be reached now (a wrong URL
        should stop the server from starting rather than answer 503 forever).
        """
        self.notifier.loop = asyncio.get_running_loop()
        # A bounded pool: a burst of requests queues for a connection rather than
        # opening one each. The appends and the notifications each hold a
        # connection of their own besides (opened with the pool's settings).
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=self._max_connections,
            timeout=self._socket_timeout,
            socket_connect_timeout=self._connect_timeout,
            # No socket_timeout: redis-py would wrap each command's send in
            # asyncio.wait_for, which on Python 3.11 drops a cancel that lands
            # as the send completes (and the run being cancelled goes on
            # appending). ``_call`` bounds each whole command instead.
            socket_timeout=None,
            # Never retry: a script whose reply was lost may have run.
            retry=Retry(NoBackoff(), 0),
            **_POOL_OPTIONS,
        )
        # (After from_url, which lets the URL's ?max_connections= win.)
        pool.max_connections = max(1, pool.max_connections - 2)
        self._redis = aioredis.Redis.from_pool(pool)
        for name, text in script_texts().items():
            self._scripts[name] = self._redis.register_script(text)
        self._hot = Pipeline(pool, self._library, self._socket_timeout)
        try:
            await self._call(self._redis.ping())
            await self._load_library()
        except (BackendUnavailable, ResponseError) as err:
            await self._redis.aclose()
            self._redis = None
            if isinstance(err, ResponseError):  # (no FUNCTION command)
                raise BackendUnavailable(
                    f"the Redis at {redact(self._url)} cannot load functions ({err}); "
                    "tether's Redis store needs Redis >= 7.0"
                ) from None
            raise BackendUnavailable(f"cannot reach Redis at {redact(self._url)}") from None
        self._subscriber = Subscriber(self._redis, self.prefix, self.notifier, self._call)
        self._subscriber.start()
        try:
            async with asyncio.timeout(self._connect_timeout * 2 + 1):
                await self._subscriber.subscribed.wait()
        except BaseException as err:  # (cancelled too: the subscriber must not outlive us)
            await self.aclose()
            if isinstance(err, TimeoutError):
                raise BackendUnavailable(
                    f"cannot subscribe to notifications at {redact(self._url)}"
                ) from None
            raise
        if self._sweep_interval > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="tether-redis-sweep")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None
        self.notifier.loop = None
        if self._hot is not None:
            await self._hot.aclose()
            self._hot = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except BackendUnavailable as err:
                log.debug("expiry sweep skipped: %s", err)
            except Exception:
                log.exception("expiry sweep failed; will retry")

    async def sweep(self) -> int:
        """Expire every stream whose time is up; returns how many were expired."""
        total = 0
        while True:
            expired, looked = await self._script("sweep", [str(SWEEP_BATCH)])
            total += int(expired)
            if int(looked) < SWEEP_BATCH:
                return total

    # -- calling Redis -------------------------------------------------------

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    async def _call(self, awaitable: Any, timeout: bool = True) -> Any:
        """Await one command, bounded by the socket timeout (unless ``timeout`` is False:
        the hot path bounds its own, to drop the connection), Redis's errors mapped."""
        try:
            if not timeout:  # (no timeout context at all: one per append was measurable)
                return await awaitable
            async with asyncio.timeout(self._socket_timeout):
                return await awaitable
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            raise BackendUnavailable("the Redis store is unavailable; try again") from err
        except ResponseError as err:
            if str(err).startswith(_UNAVAILABLE_PREFIXES):
                raise BackendUnavailable(
                    "the Redis store cannot serve requests right now; try again"
                ) from err
            raise

    async def _load_library(self) -> None:
        await self._call(self._client().function_load(self._library.code, replace=True))

    async def _script(self, name: str, args: list[str | bytes]) -> Any:
        """Call stream function ``name`` (loading the library again if Redis lost it)."""
        function = self._library.function(name)
        call = [self.prefix, self._now(), *args]
        try:
            return await self._call(self._client().fcall(function, 0, *call))
        except ResponseError as err:
            if FUNCTION_NOT_FOUND not in str(err):
                raise
        await self._load_library()  # (nothing ran: it is safe to call again)
        return await self._call(self._client().fcall(function, 0, *call))

    # -- operations ----------------------------------------------------------

    async def create(self, path: str, req: CreateRequest) -> CreateResult:
        if req.fork_from == "":
            raise StreamNotFound("")
        ct = req.content_type or ""
        args: list[str | bytes] = [
            path,
            ct,
            media_type(ct) if ct else "",
            _flag(bool(ct) and is_json(ct)),
            "" if req.ttl is None else str(req.ttl),
            "" if req.expires_at is None else repr(float(req.expires_at)),
            _flag(req.closed),
            "" if req.fork_from is None else req.fork_from,
            "" if req.fork_offset is None else str(req.fork_offset),
            str(req.fork_sub_offset),
            *req.messages,
        ]
        reply = await self._script("create", args)
        if int(reply[0]) != Status.OK:
            raise_for(reply, path)
        result = CreateResult(_parse_meta(reply[2]), created=int(reply[1]) == 1)
        if result.created and self.on_append is not None:
            self.on_append(path, result.meta.tail)
        return result

    async def append(self, path: str, req: AppendRequest) -> AppendResult:
        p = req.producer
        args: list[str | bytes] = [
            path,
            _flag(req.content_type is not None),
            "" if req.content_type is None else media_type(req.content_type),
            _flag(req.seq is not None),
            req.seq or "",
            _flag(p is not None),
            p.id if p else "",
            str(p.epoch) if p else "",
            str(p.seq) if p else "",
            _flag(req.close),
            req.lease[0] if req.lease else "",
            req.lease[1] if req.lease else "",
            *req.messages,
        ]
        if self._hot is None:
            raise BackendUnavailable("the Redis store is not open")
        began = time.perf_counter()
        hot = self._hot.fcall("append", [self.prefix, self._now(), *args])
        reply = await self._call(hot, timeout=False)
        if int(reply[0]) != Status.OK:
            raise_for(reply, path, req)
        self._meters.committed(1, time.perf_counter() - began)
        if self.on_append is not None and int(reply[3]) == 1:
            self.on_append(path, int(reply[1]))
        producer = len(reply) > 4
        return AppendResult(
            tail=int(reply[1]),
            closed=int(reply[2]) == 1,
            appended=int(reply[3]) == 1,
            producer_epoch=int(reply[4]) if producer else None,
            producer_seq=int(reply[5]) if producer else None,
        )

    async def read(self, path: str, offset: int | None, max_bytes: int) -> ReadResult:
        reply = await self._script(
            "read", [path, "" if offset is None else str(offset), str(max(max_bytes, 1))]
        )
        if int(reply[0]) != Status.OK:
            raise_for(reply, path)
        meta = _parse_meta(reply[1])
        nxt = int(reply[2])
        return ReadResult(
            meta,
            meta.tail if offset is None else offset,
            list(reply[5]),
            nxt,
            int(reply[3]) == 1,
            int(reply[4]) == 1,
        )

    async def head(self, path: str) -> StreamMeta:
        reply = await self._script("head", [path])
        if int(reply[0]) != Status.OK:
            raise_for(reply, path)
        return _parse_meta(reply[1])

    async def delete(self, path: str) -> None:
        reply = await self._script("delete", [path])
        if int(reply[0]) != Status.OK:
            raise_for(reply, path)

    async def list_paths(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        # HSCAN over the hash of paths, matching the prefix: a cursor-kept scan
        # (no order), made only when a subscription is created.
        cursor = int(after) if after else 0
        match = _GLOB_SPECIAL.sub(r"\\\g<0>", prefix) + "*"
        cursor, found = await self._call(
            self._client().hscan(self.prefix + "paths", cursor, match=match, count=limit)
        )
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in found]
        return paths, (str(cursor) if int(cursor) != 0 else None)

    # -- records -------------------------------------------------------------

    def _rkey(self, namespace: str) -> str:
        return f"{self.prefix}r:{namespace}"

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise BackendUnavailable("the Redis store is not open")
        return self._redis

    async def put_record(self, namespace: str, key: str, value: bytes) -> None:
        await self._call(self._client().hset(self._rkey(namespace), key, value))

    async def get_record(self, namespace: str, key: str) -> bytes | None:
        value = await self._call(self._client().hget(self._rkey(namespace), key))
        return None if value is None else bytes(value)

    async def get_records(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._call(self._client().hmget(self._rkey(namespace), keys))
        return [None if v is None else bytes(v) for v in values]

    async def list_records(self, namespace: str) -> list[tuple[str, bytes]]:
        items = await self._call(self._client().hgetall(self._rkey(namespace)))
        return sorted((k.decode(), bytes(v)) for k, v in items.items())

    async def delete_record(self, namespace: str, key: str) -> None:
        await self._call(self._client().hdel(self._rkey(namespace), key))

    # -- indexes -------------------------------------------------------------

    def _xkeys(self, name: str) -> list[str]:
        return [f"{self.prefix}x:{name}", f"{self.prefix}xk:{name}"]

    async def index_put(self, name: str, member: str, key: str) -> None:
        await self._keyed_script("index_put", self._xkeys(name), [member, key])

    async def index_remove(self, name: str, member: str) -> None:
        await self._keyed_script("index_remove", self._xkeys(name), [member])

    async def index_page(self, name: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        # Entries sort as "<key>\0<member>": those with a key past ``after`` start at after\1.
        low = "-" if after is None else f"[{after}\x01"
        zset = self._xkeys(name)[0]
        raw = await self._call(
            self._client().zrange(zset, low, "+", bylex=True, offset=0, num=limit)
        )
        return [tuple(bytes(entry).decode().split("\0", 1)) for entry in raw]  # type: ignore[misc]

    async def index_count(self, name: str) -> int:
        return int(await self._call(self._client().zcard(self._xkeys(name)[0])))

    # -- leases --------------------------------------------------------------

    def _lkey(self, name: str) -> str:
        return f"{self.prefix}l:{name}"

    async def _keyed_script(self, name: str, keys: list[str], args: list[str]) -> Any:
        self._client()
        return await self._call(self._scripts[name](keys, args))

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        ms = str(max(1, round(ttl * 1000)))
        return bool(await self._keyed_script("lease_acquire", [self._lkey(name)], [owner, ms]))

    async def renew_leases(self, names: list[str], owner: str, ttl: float) -> list[str]:
        if not names:
            return []
        ms = str(max(1, round(ttl * 1000)))
        keys = [self._lkey(n) for n in names]
        lost = await self._keyed_script("lease_renew", keys, [owner, ms])
        return [names[int(i) - 1] for i in lost]

    async def release_lease(self, name: str, owner: str) -> None:
        await self._keyed_script("lease_release", [self._lkey(name)], [owner])

    async def lease_holder(self, name: str) -> str | None:
        value = await self._call(self._client().get(self._lkey(name)))
        return None if value is None else bytes(value).decode()
