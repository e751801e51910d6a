"""What a store that one process owns needs from its storage (memory, SQLite).

``LocalStore`` keeps the log's semantics; a persistence only stores and finds:
synchronous primitives, each ``write`` one atomic transaction. A persistence
that can also hold writes open and commit many at once (SQLite) is also a
:class:`GroupPersistence`, which ``GroupCommit`` uses.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from tether.store.base import StreamMeta


class Row(NamedTuple):
    """A row of the log: one JSON message, or one byte append, at [start, end)."""

    start: int
    end: int
    #: The start position of the append the row came from, so a JSON batch can be found again.
    batch: int
    data: bytes


#: A row as reads pass it on: a :class:`Row`'s fields in a plain tuple, unpacked
#: by name. A catch-up read handles thousands of rows, and building (and
#: unpacking) a named tuple costs several times what a plain one does.
RowFields = tuple[int, int, int, bytes]


class StreamRow(NamedTuple):
    """A row to write, and the stream it belongs to."""

    stream_id: int
    row: Row


class ProducerState(NamedTuple):
    """An idempotent producer's last accepted append on one stream."""

    stream_id: int
    producer_id: str
    epoch: int
    seq: int


class Extent(NamedTuple):
    """[start, end) of one append."""

    start: int
    end: int


class Persistence(Protocol):
    """Synchronous storage primitives; ``write`` is one atomic transaction."""

    def load(self, path: str) -> StreamMeta | None: ...

    def load_id(self, stream_id: int) -> StreamMeta | None: ...

    def new_id(self) -> int: ...

    def producer(self, stream_id: int, producer_id: str) -> tuple[int, int] | None: ...

    def rows(self, stream_id: int, lo: int, hi: int, max_bytes: int) -> list[RowFields]:
        """The rows holding positions [lo, hi), stopping once they hold ``max_bytes``."""

    def batch_extent(self, stream_id: int, pos: int, hi: int) -> Extent | None:
        """The append of this stream's own rows that holds ``pos``, if any."""

    def write(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow] | None = None,
        producers: list[ProducerState] | None = None,
        deletes: list[int] | None = None,
    ) -> None: ...

    def expired(self, now: float) -> list[str]: ...

    def paths(self, prefix: str, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` stream paths starting with ``prefix``, in order, after ``after``."""

    def put_record(self, namespace: str, key: str, value: bytes) -> None: ...

    def get_record(self, namespace: str, key: str) -> bytes | None: ...

    def list_records(self, namespace: str) -> list[tuple[str, bytes]]: ...

    def delete_record(self, namespace: str, key: str) -> None: ...

    def index_put(self, name: str, member: str, key: str) -> None: ...

    def index_remove(self, name: str, member: str) -> None: ...

    def index_page(self, name: str, after: str | None, limit: int) -> list[tuple[str, str]]: ...

    def index_count(self, name: str) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class GroupPersistence(Protocol):
    """What a persistence that can hold writes open and commit many at once adds."""

    def write_deferred(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow],
        producers: list[ProducerState],
    ) -> None:
        """Like ``write``, inside a transaction left open for :meth:`commit`."""

    def begin_deferred(self) -> None:
        """Open the group's transaction if none is open (for the writes that follow)."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...
