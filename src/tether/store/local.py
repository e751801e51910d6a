"""Log semantics for a store that one process owns (memory and SQLite).

All checks and writes of one operation run without an ``await`` in between,
so on a single event loop every operation is atomic with respect to the
others: producer validation and its append are serialised for free. The
persistence layer is synchronous and commits each operation as one
transaction; the metadata of streams in use is cached here, which is sound
because this process is the only writer (the SQLite backend takes a lock).

Group commit (SQLite): the appends of one event-loop iteration after its first
share one transaction, and record writes join it; see ``group_commit.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from tether.observability.metrics import StoreMeters
from tether.store.append_checks import check_producer, check_sequence, normalized
from tether.store.base import (
    AppendRequest,
    AppendResult,
    CreateRequest,
    CreateResult,
    ReadResult,
    Store,
    StreamMeta,
    media_type,
)
from tether.store.errors import (
    BadRequest,
    InsufficientStorage,
    LeaseLost,
    StreamClosed,
    StreamConflict,
    StreamGone,
    StreamNotFound,
)
from tether.store.group_commit import GroupCommit
from tether.store.notify import TailNotifier
from tether.store.persistence import (
    Extent,
    GroupPersistence,
    Persistence,
    ProducerState,
    Row,
    StreamRow,
)

log = logging.getLogger(__name__)

#: How often the sweeper looks for expired streams, in seconds.
SWEEP_INTERVAL = 5.0
#: A read renews a sliding TTL in memory at once, but writes the renewal
#: through only this often (seconds): reads stay read-only on the hot path.
ACCESS_PERSIST_INTERVAL = 1.0


class _Segment(NamedTuple):
    """Positions [lo, hi) of a stream that stream ``stream_id`` holds (itself or a source)."""

    stream_id: int
    lo: int
    hi: int


class _Lease(NamedTuple):
    owner: str
    #: On the monotonic clock.
    deadline: float


#: Pending index writes are tracked like a records namespace of this name.
_INDEX = "\x00index:"


class LocalStore(Store):
    def __init__(self, persistence: Persistence, clock: Callable[[], float] = time.time) -> None:
        self._db = persistence
        self._clock = clock
        self._by_path: dict[str, StreamMeta] = {}
        self._by_id: dict[int, StreamMeta] = {}
        self._persisted_access: dict[int, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.notifier = TailNotifier()
        #: Leases by name. This process is the store's only user, so they need
        #: no persistence.
        self._leases: dict[str, _Lease] = {}
        #: Writes waiting for a shared commit, with a persistence that can group them.
        #: Appends and commit times, under this store's kind (sqlite, memory).
        self._meters = StoreMeters(type(self).__name__.removesuffix("Store").lower())
        self._group: GroupCommit | None = (
            GroupCommit(persistence, self.notifier, self._forget, self._meters)
            if isinstance(persistence, GroupPersistence)
            else None
        )

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        self.notifier.loop = asyncio.get_running_loop()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="tether-expiry-sweeper")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._flush()
        self._db.close()
        self.notifier.loop = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.sweep()
            except InsufficientStorage:
                pass  # the persistence has said so; the next sweep tries again
            except Exception:
                log.exception("expiry sweep failed; will retry")

    def sweep(self) -> int:
        """Expire every stream whose time is up; returns how many were expired."""
        now = self._clock()
        n = 0
        for path in self._db.expired(now):
            meta = self._meta(path)
            # The stored access time lags reads by up to ACCESS_PERSIST_INTERVAL;
            # the cached one is exact, so it has the last word.
            expiry = None if meta is None else meta.expiry()
            if meta is not None and not meta.soft_deleted and expiry is not None and expiry <= now:
                self._remove(meta)
                n += 1
        return n

    # -- metadata cache ------------------------------------------------------

    def _meta(self, path: str) -> StreamMeta | None:
        meta = self._by_path.get(path)
        if meta is None:
            meta = self._db.load(path)
            if meta is not None:
                self._cache(meta)
        return meta

    def _meta_id(self, stream_id: int) -> StreamMeta:
        meta = self._by_id.get(stream_id)
        if meta is None:
            meta = self._db.load_id(stream_id)
            if meta is None:
                raise RuntimeError(f"fork source {stream_id} is missing from the log")
            self._cache(meta)
        return meta

    def _cache(self, meta: StreamMeta) -> None:
        self._by_path[meta.path] = meta
        self._by_id[meta.id] = meta

    def _forget(self, meta: StreamMeta) -> None:
        cached = self._by_path.get(meta.path)
        if cached is not None and cached.id == meta.id:
            del self._by_path[meta.path]
        self._by_id.pop(meta.id, None)
        self._persisted_access.pop(meta.id, None)

    def _live(self, path: str, now: float) -> StreamMeta:
        """The stream at ``path`` if it exists and has not expired."""
        meta = self._meta(path)
        if meta is None:
            raise StreamNotFound(path)
        if meta.soft_deleted:
            raise StreamGone(path)
        expiry = meta.expiry()
        if expiry is not None and now >= expiry:
            self._remove(meta)
            if meta.refs > 0:
                raise StreamGone(path)
            raise StreamNotFound(path)
        return meta

    # -- removal -------------------------------------------------------------

    def _remove(self, meta: StreamMeta) -> None:
        """Delete or expire: soft while forks read through it, else for good."""
        self._flush()
        if meta.refs > 0:
            gone = replace(meta, soft_deleted=True)
            self._db.write([gone])
            self._cache(gone)
        else:
            self._hard_delete(meta)
        self.notifier.publish(meta.path, meta.tail, meta.tail, [], meta.closed, deleted=True)

    def _hard_delete(self, meta: StreamMeta) -> None:
        doomed = [meta]
        updates: list[StreamMeta] = []
        cur = meta
        while cur.fork_of is not None:
            src = self._meta_id(cur.fork_of)
            src = replace(src, refs=src.refs - 1)
            if src.soft_deleted and src.refs == 0:
                doomed.append(src)
                cur = src
                continue
            updates.append(src)
            break
        self._db.write(updates, deletes=[m.id for m in doomed])
        for m in doomed:
            self._forget(m)
        for m in updates:
            self._cache(m)

    # -- operations ----------------------------------------------------------

    async def create(self, path: str, req: CreateRequest) -> CreateResult:
        self._flush()
        now = self._clock()
        source: StreamMeta | None = None
        start = 0
        if req.fork_from is not None:
            source, start = self._fork_point(req)
        content_type = req.content_type or (source.content_type if source else None)
        if content_type is None:
            content_type = "application/octet-stream"
        if source is not None and media_type(content_type) != media_type(source.content_type):
            raise StreamConflict("a fork must have its source's content type")
        ttl, expires_at = req.ttl, req.expires_at
        if source is not None and ttl is None and expires_at is None:
            ttl, expires_at = source.ttl, source.expires_at

        existing = self._existing(path, now)
        if existing is not None:
            if not self._same_config(existing, req, content_type, ttl, expires_at, source, start):
                raise StreamConflict(
                    f"stream already exists with a different configuration: {path}"
                )
            return CreateResult(existing, created=False)

        meta = StreamMeta(
            id=self._db.new_id(),
            path=path,
            content_type=content_type,
            created_at=now,
            tail=start,
            closed=req.closed,
            ttl=ttl,
            expires_at=expires_at,
            accessed_at=now,
            fork_of=source.id if source else None,
            fork_offset=start,
        )
        messages = req.messages if meta.json else [m for m in req.messages if m]
        rows = self._rows_for(meta, start, messages)
        if rows:
            meta.tail = rows[-1].row.end
        metas = [meta]
        if source is not None:
            # Re-read: expiring an old stream at this path may have just released
            # a reference to this very source.
            source = self._meta_id(source.id)
            source = replace(source, refs=source.refs + 1)
            metas.append(source)
        self._db.write(metas, rows=rows)
        for m in metas:
            self._cache(m)
        if self.on_append is not None:
            self.on_append(path, meta.tail)
        return CreateResult(meta, created=True)

    def _existing(self, path: str, now: float) -> StreamMeta | None:
        """The stream a create would collide with, after expiring it if due."""
        meta = self._meta(path)
        if meta is None:
            return None
        if meta.soft_deleted:
            raise StreamConflict(f"stream was deleted but forks still use its path: {path}")
        expiry = meta.expiry()
        if expiry is not None and now >= expiry:
            self._remove(meta)
            if meta.refs > 0:
                raise StreamConflict(f"stream expired but forks still use its path: {path}")
            return None
        return meta

    @staticmethod
    def _same_config(
        meta: StreamMeta,
        req: CreateRequest,
        content_type: str,
        ttl: int | None,
        expires_at: float | None,
        source: StreamMeta | None,
        start: int,
    ) -> bool:
        if media_type(meta.content_type) != media_type(content_type):
            return False
        if meta.ttl != ttl or meta.expires_at != expires_at:
            return False
        if source is None:
            return meta.fork_of is None or req.fork_from is None
        if meta.fork_of != source.id:
            return False
        return req.fork_offset is None or meta.fork_offset == start

    def _fork_point(self, req: CreateRequest) -> tuple[StreamMeta, int]:
        assert req.fork_from is not None
        now = self._clock()
        try:
            source = self._live(req.fork_from, now)
        except StreamGone:
            raise StreamConflict(f"cannot fork a deleted stream: {req.fork_from}") from None
        offset = source.tail if req.fork_offset is None else req.fork_offset
        if offset > source.tail:
            raise BadRequest("fork offset is beyond the end of the source stream")
        k = req.fork_sub_offset
        if k:
            extent = self._extent(source, offset)
            if extent is None or offset + k > extent.end:
                raise BadRequest(
                    "fork sub-offset reaches past the end of the append it points into"
                )
        return source, offset + k

    def _segments(self, meta: StreamMeta) -> list[_Segment]:
        """The pieces of a stream's positions, oldest first.

        A fork sees its source only below its fork offset, and the source sees
        its own source only below its own: each step up the chain caps ``hi``.
        """
        segs = []
        cap = meta.tail
        cur = meta
        while True:
            lo = cur.fork_offset if cur.fork_of is not None else 0
            hi = min(cap, cur.tail)
            if lo < hi:
                segs.append(_Segment(cur.id, lo, hi))
            if cur.fork_of is None:
                break
            cap = min(cap, lo)
            cur = self._meta_id(cur.fork_of)
        segs.reverse()
        return segs

    def _extent(self, meta: StreamMeta, pos: int) -> Extent | None:
        """[start, end) of the append that holds position ``pos``, as this stream sees it."""
        for stream_id, lo, hi in self._segments(meta):
            if lo <= pos < hi:
                found = self._db.batch_extent(stream_id, pos, hi)
                if found is None:
                    return None
                return Extent(found.start, min(found.end, hi))
        return None

    def _rows_for(self, meta: StreamMeta, start: int, messages: list[bytes]) -> list[StreamRow]:
        if not messages:
            return []
        sid = meta.id
        if meta.json:
            if len(messages) == 1:  # most appends: no enumerate, no comprehension
                return [StreamRow(sid, Row(start, start + 1, start, messages[0]))]
            return [
                StreamRow(sid, Row(start + i, start + i + 1, start, m))
                for i, m in enumerate(messages)
            ]
        data = messages[0] if len(messages) == 1 else b"".join(messages)
        return [StreamRow(sid, Row(start, start + len(data), start, data))]

    async def append(self, path: str, req: AppendRequest) -> AppendResult:
        now = self._clock()
        meta = self._live(path, now)
        if req.lease is not None and self._holder(req.lease[0]) != req.lease[1]:
            raise LeaseLost(req.lease[0])
        req = normalized(meta, req)
        producers: list[ProducerState] = []
        p = req.producer
        if p is not None:
            duplicate = check_producer(meta, p, self._db.producer(meta.id, p.id))
            if duplicate is not None:
                return duplicate
            producers.append(ProducerState(meta.id, p.id, p.epoch, p.seq))
        if meta.closed:
            if not req.messages and p is None:
                return AppendResult(meta.tail, True)
            raise StreamClosed(path, meta.tail)
        check_sequence(meta, req)

        old_tail = meta.tail
        rows = self._rows_for(meta, old_tail, req.messages)
        new = meta.after_append(
            tail=rows[-1].row.end if rows else old_tail,
            closed=meta.closed or req.close,
            last_seq=req.seq if req.seq is not None else meta.last_seq,
            accessed_at=now,
            closed_by=(p.id, p.epoch, p.seq) if (req.close and p is not None) else meta.closed_by,
        )
        # The tail is recomputed from the rows on load, so a plain append
        # writes only its rows; the stream's record changes when its state does.
        dirty = (
            new.closed != meta.closed
            or new.last_seq != meta.last_seq
            or (
                meta.ttl is not None
                and now - self._persisted_access.get(meta.id, 0.0) >= ACCESS_PERSIST_INTERVAL
            )
        )
        if dirty:
            self._persisted_access[new.id] = now
        result = AppendResult(
            new.tail,
            new.closed,
            True,
            p.epoch if p else None,
            p.seq if p else None,
        )
        chunks = [r.row.data for r in rows]
        group = self._group
        if group is not None and not req.close and group.joins():
            group.write(meta, [new] if dirty else [], rows, producers)
            self._cache(new)
            await group.join(path, (old_tail, new.tail, chunks, new.closed))
            if self.on_append is not None:
                self.on_append(path, new.tail)
            return result
        # The iteration's first append (or no group commit, or a close): committed alone, now.
        if group is not None:
            group.flush()
            if not req.close:
                group.group_rest_of_iteration()
        began = time.perf_counter()
        self._db.write([new] if dirty else [], rows=rows, producers=producers)
        self._meters.committed(1, time.perf_counter() - began)
        self._cache(new)
        self.notifier.publish(path, old_tail, new.tail, chunks, new.closed)
        if self.on_append is not None:
            self.on_append(path, new.tail)
        return result

    def _flush(self) -> None:
        """Commit the pending group, if any (before a write that commits on its own)."""
        if self._group is not None:
            self._group.flush()

    def _flush_for(self, namespace: str) -> None:
        """Commit the pending group if it holds a write to ``namespace`` (before reading it)."""
        if self._group is not None:
            self._group.flush_for(namespace)

    def _last_committed(self, meta: StreamMeta) -> StreamMeta:
        """Appends not committed yet are not there for readers."""
        return meta if self._group is None else self._group.last_committed(meta)

    async def read(self, path: str, offset: int | None, max_bytes: int) -> ReadResult:
        now = self._clock()
        meta = self._live(path, now)
        if meta.ttl is not None:
            meta = self._renew(meta, now)
        meta = self._last_committed(meta)
        if offset is None:
            return ReadResult(meta, meta.tail, [], meta.tail, True, meta.closed)
        if offset > meta.tail:
            raise BadRequest("offset is beyond the end of the stream")
        chunks: list[bytes] = []
        pos = offset
        budget = max(max_bytes, 1)
        for stream_id, lo, hi in self._segments(meta):
            # A backend may stop early (it counts a first row read from its
            # middle in full), so ask again until this piece is read or the
            # budget is spent: a later piece must never be read past a gap.
            while pos < hi and budget > 0:
                rows = self._db.rows(stream_id, max(pos, lo), hi, budget)
                if not rows:
                    break
                for start, end, _batch, data in rows:
                    if end > hi:
                        data = data[: hi - start]
                        end = hi
                    if start < pos:
                        data = data[pos - start :]
                    chunks.append(data)
                    budget -= len(data)
                    pos = end
                    if budget <= 0:
                        break
            if budget <= 0 or pos < hi:
                break
        up_to_date = pos >= meta.tail
        return ReadResult(meta, offset, chunks, pos, up_to_date, up_to_date and meta.closed)

    def _renew(self, meta: StreamMeta, now: float) -> StreamMeta:
        meta.accessed_at = now
        if now - self._persisted_access.get(meta.id, 0.0) >= ACCESS_PERSIST_INTERVAL:
            self._flush()
            try:
                self._db.write([meta])
            except InsufficientStorage:
                return meta  # a read still works on a full disk; a later one persists this
            self._persisted_access[meta.id] = now
        return meta

    async def head(self, path: str) -> StreamMeta:
        return self._last_committed(self._live(path, self._clock()))

    async def delete(self, path: str) -> None:
        meta = self._live(path, self._clock())
        self._remove(meta)

    async def list_paths(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        self._flush()
        now = self._clock()
        out: list[str] = []
        last = after
        while len(out) < limit:
            page = self._db.paths(prefix, last, limit)
            for path in page:
                meta = self._meta(path)
                expiry = None if meta is None else meta.expiry()
                if meta is not None and not meta.soft_deleted and (expiry is None or expiry > now):
                    out.append(path)
            if len(page) < limit:
                return out, None
            last = page[-1]
        return out, last

    async def put_record(self, namespace: str, key: str, value: bytes) -> None:
        await self._record_write(namespace, lambda: self._db.put_record(namespace, key, value))

    async def get_record(self, namespace: str, key: str) -> bytes | None:
        self._flush_for(namespace)  # never answer with what is not committed yet
        return self._db.get_record(namespace, key)

    async def list_records(self, namespace: str) -> list[tuple[str, bytes]]:
        self._flush_for(namespace)
        return self._db.list_records(namespace)

    async def delete_record(self, namespace: str, key: str) -> None:
        await self._record_write(namespace, lambda: self._db.delete_record(namespace, key))

    async def index_put(self, name: str, member: str, key: str) -> None:
        await self._record_write(_INDEX + name, lambda: self._db.index_put(name, member, key))

    async def index_remove(self, name: str, member: str) -> None:
        await self._record_write(_INDEX + name, lambda: self._db.index_remove(name, member))

    async def index_page(self, name: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        self._flush_for(_INDEX + name)
        return self._db.index_page(name, after, limit)

    async def index_count(self, name: str) -> int:
        self._flush_for(_INDEX + name)
        return self._db.index_count(name)

    async def _record_write(self, namespace: str, write: Callable[[], None]) -> None:
        """Write a record in the pending group; answered once the group is committed."""
        if self._group is None:
            write()
            return
        await self._group.write_record(namespace, write)

    # -- leases --------------------------------------------------------------

    def _holder(self, name: str) -> str | None:
        held = self._leases.get(name)
        if held is None:
            return None
        if held.deadline <= time.monotonic():
            del self._leases[name]
            return None
        return held.owner

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        if self._holder(name) not in (None, owner):
            return False
        self._leases[name] = _Lease(owner, time.monotonic() + ttl)
        return True

    async def renew_leases(self, names: list[str], owner: str, ttl: float) -> list[str]:
        lost = []
        deadline = time.monotonic() + ttl
        for name in names:
            if self._holder(name) == owner:
                self._leases[name] = _Lease(owner, deadline)
            else:
                lost.append(name)
        return lost

    async def release_lease(self, name: str, owner: str) -> None:
        if self._holder(name) == owner:
            del self._leases[name]

    async def lease_holder(self, name: str) -> str | None:
        return self._holder(name)
