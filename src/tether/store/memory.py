"""In-memory persistence: the log semantics without a disk, for tests and demos."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import replace

from tether.store.base import StreamMeta
from tether.store.local import LocalStore
from tether.store.persistence import Extent, ProducerState, Row, RowFields, StreamRow


class MemoryPersistence:
    def __init__(self) -> None:
        self._metas: dict[int, StreamMeta] = {}
        self._paths: dict[str, int] = {}
        self._rows: dict[int, list[Row]] = {}
        self._starts: dict[int, list[int]] = {}
        self._producers: dict[tuple[int, str], tuple[int, int]] = {}
        self._next_id = 1
        self._records: dict[str, dict[str, bytes]] = {}
        #: index name -> (member -> key, sorted (key, member) pairs)
        self._indexes: dict[str, tuple[dict[str, str], list[tuple[str, str]]]] = {}

    def load(self, path: str) -> StreamMeta | None:
        sid = self._paths.get(path)
        return None if sid is None else self.load_id(sid)

    def load_id(self, stream_id: int) -> StreamMeta | None:
        meta = self._metas.get(stream_id)
        if meta is None:
            return None
        meta = replace(meta)
        rows = self._rows.get(stream_id)
        if rows and rows[-1].end > meta.tail:
            meta.tail = rows[-1].end
        return meta

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def producer(self, stream_id: int, producer_id: str) -> tuple[int, int] | None:
        return self._producers.get((stream_id, producer_id))

    def rows(self, stream_id: int, lo: int, hi: int, max_bytes: int) -> list[RowFields]:
        rows = self._rows.get(stream_id, [])
        starts = self._starts.get(stream_id, [])
        i = bisect.bisect_right(starts, lo) - 1
        if i < 0 or rows[i].end <= lo:
            i += 1
        out: list[RowFields] = []
        size = 0
        while i < len(rows) and rows[i].start < hi:
            out.append(rows[i])
            size += len(rows[i].data)
            i += 1
            if size >= max_bytes:
                break
        return out

    def batch_extent(self, stream_id: int, pos: int, hi: int) -> Extent | None:
        rows = self._rows.get(stream_id, [])
        starts = self._starts.get(stream_id, [])
        i = bisect.bisect_right(starts, pos) - 1
        if i < 0 or rows[i].end <= pos:
            return None
        batch = rows[i].batch
        j = i
        while j + 1 < len(rows) and rows[j + 1].batch == batch:
            j += 1
        return Extent(batch, rows[j].end)

    def write(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow] | None = None,
        producers: list[ProducerState] | None = None,
        deletes: list[int] | None = None,
    ) -> None:
        for meta in metas:
            self._metas[meta.id] = replace(meta)
            self._paths[meta.path] = meta.id
        for sid, row in rows or ():
            self._rows.setdefault(sid, []).append(row)
            self._starts.setdefault(sid, []).append(row.start)
        for sid, pid, epoch, seq in producers or ():
            self._producers[(sid, pid)] = (epoch, seq)
        for sid in deletes or ():
            gone = self._metas.pop(sid, None)
            if gone is not None and self._paths.get(gone.path) == sid:
                del self._paths[gone.path]
            self._rows.pop(sid, None)
            self._starts.pop(sid, None)
            for key in [k for k in self._producers if k[0] == sid]:  # (stream, producer)
                del self._producers[key]

    def expired(self, now: float) -> list[str]:
        out = []
        for meta in self._metas.values():
            expiry = meta.expiry()
            if not meta.soft_deleted and expiry is not None and now >= expiry:
                out.append(meta.path)
        return out

    def paths(self, prefix: str, after: str | None, limit: int) -> list[str]:
        # Sorting every path is fine for the store of tests and demos.
        matching = sorted(
            p for p in self._paths if p.startswith(prefix) and (after is None or p > after)
        )
        return matching[:limit]

    def put_record(self, namespace: str, key: str, value: bytes) -> None:
        self._records.setdefault(namespace, {})[key] = value

    def get_record(self, namespace: str, key: str) -> bytes | None:
        return self._records.get(namespace, {}).get(key)

    def list_records(self, namespace: str) -> list[tuple[str, bytes]]:
        return sorted(self._records.get(namespace, {}).items())

    def delete_record(self, namespace: str, key: str) -> None:
        self._records.get(namespace, {}).pop(key, None)

    def index_put(self, name: str, member: str, key: str) -> None:
        self.index_remove(name, member)
        keys, order = self._indexes.setdefault(name, ({}, []))
        keys[member] = key
        bisect.insort(order, (key, member))

    def index_remove(self, name: str, member: str) -> None:
        keys, order = self._indexes.get(name, ({}, []))
        key = keys.pop(member, None)
        if key is not None:
            order.pop(bisect.bisect_left(order, (key, member)))

    def index_page(self, name: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        _, order = self._indexes.get(name, ({}, []))
        start = 0 if after is None else bisect.bisect_right(order, (after, "\U0010ffff"))
        return order[start : start + limit]

    def index_count(self, name: str) -> int:
        keys, _ = self._indexes.get(name, ({}, []))
        return len(keys)

    def close(self) -> None:
        pass


class MemoryStore(LocalStore):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(MemoryPersistence(), clock)
