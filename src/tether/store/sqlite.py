"""SQLite persistence: the embedded default, one WAL-mode file under the data dir.

Each operation is one transaction, committed before the caller answers
(appends of one event-loop iteration share one: see ``LocalStore``). With
``synchronous=NORMAL`` a committed transaction is in the WAL file when the
commit returns, so it survives the server process being killed; set
``synchronous`` to ``FULL`` to also survive power loss, at the cost of an
fsync per append.

A write the disk cannot take (it is full, or failing) raises
:class:`~tether.store.errors.InsufficientStorage`: SQLite has undone it, so
nothing of it is left behind, and the next write after space is freed works.
Reads go on meanwhile.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tether.store.base import StreamMeta
from tether.store.errors import InsufficientStorage
from tether.store.local import LocalStore
from tether.store.persistence import Extent, ProducerState, RowFields, StreamRow

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    content_type TEXT NOT NULL,
    created_at REAL NOT NULL,
    tail INTEGER NOT NULL,
    closed INTEGER NOT NULL,
    ttl INTEGER,
    expires_at REAL,
    accessed_at REAL NOT NULL,
    fork_of INTEGER,
    fork_offset INTEGER NOT NULL,
    last_seq TEXT,
    closed_by TEXT,
    soft_deleted INTEGER NOT NULL,
    refs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    stream INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (stream, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idx (
    name TEXT NOT NULL,
    member TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (name, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_order ON idx (name, key);
CREATE TABLE IF NOT EXISTS producers (
    stream INTEGER NOT NULL,
    producer TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (stream, producer)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "id, path, content_type, created_at, tail, closed, ttl, expires_at, accessed_at, "
    "fork_of, fork_offset, last_seq, closed_by, soft_deleted, refs"
)
_UPSERT = f"INSERT OR REPLACE INTO streams ({_COLUMNS}) VALUES ({', '.join('?' * 15)})"
_ROW_COLUMNS = 'start, "end", batch, data'
_INSERT_ROW = f"INSERT INTO chunks (stream, {_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?)"


def _to_row(m: StreamMeta) -> tuple[object, ...]:
    closed_by = (
        None if m.closed_by is None else f"{m.closed_by[1]}:{m.closed_by[2]}:{m.closed_by[0]}"
    )
    return (
        m.id, m.path, m.content_type, m.created_at, m.tail, int(m.closed), m.ttl, m.expires_at,
        m.accessed_at, m.fork_of, m.fork_offset, m.last_seq, closed_by, int(m.soft_deleted),
        m.refs,
    )  # fmt: skip


def _from_row(r: tuple[object, ...]) -> StreamMeta:
    closed_by = None
    if r[12] is not None:
        epoch, seq, pid = str(r[12]).split(":", 2)
        closed_by = (pid, int(epoch), int(seq))
    return StreamMeta(
        id=int(r[0]),  # type: ignore[call-overload]
        path=str(r[1]),
        content_type=str(r[2]),
        created_at=float(r[3]),  # type: ignore[arg-type]
        tail=int(r[4]),  # type: ignore[call-overload]
        closed=bool(r[5]),
        ttl=None if r[6] is None else int(r[6]),  # type: ignore[call-overload]
        expires_at=None if r[7] is None else float(r[7]),  # type: ignore[arg-type]
        accessed_at=float(r[8]),  # type: ignore[arg-type]
        fork_of=None if r[9] is None else int(r[9]),  # type: ignore[call-overload]
        fork_offset=int(r[10]),  # type: ignore[call-overload]
        last_seq=None if r[11] is None else str(r[11]),
        closed_by=closed_by,
        soft_deleted=bool(r[13]),
        refs=int(r[14]),  # type: ignore[call-overload]
    )


#: Bytes the writer cuts the WAL file down to when it starts the WAL over: well
#: above what sustained appends use between two starts (about RESTART_FRAMES
#: pages), so they never pay for the cut.
JOURNAL_SIZE_LIMIT = 64 << 20


class DataDirLocked(RuntimeError):
    pass


#: What a client is told when the disk refuses a write, by SQLite's primary result code.
_CANNOT_WRITE = {
    sqlite3.SQLITE_FULL: "the server's disk is full; nothing was written, try again later",
    sqlite3.SQLITE_IOERR: (
        "the server could not write to its disk; nothing was written, try again later"
    ),
}


class _DiskRefusals:
    """``with`` it around a write: the disk refusing it raises InsufficientStorage.

    The cause (SQLite's own words) is logged once when writes start failing
    and once when they work again, not once per refused write: while the disk
    is full, every client's every retry fails.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._failing = False

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, err: BaseException | None, tb: object) -> None:
        if not isinstance(err, sqlite3.Error):
            return
        message = _CANNOT_WRITE.get(getattr(err, "sqlite_errorcode", 0) & 0xFF)
        if message is None:
            return
        if not self._failing:
            self._failing = True
            log.error(
                "cannot write to %s: %s; writes are refused until space is freed",
                self._path, err,
            )  # fmt: skip
        raise InsufficientStorage(message) from err

    def succeeded(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("writing to %s works again", self._path)


class _Checkpointer:
    """Copies the WAL into the database on its own connection, off the event loop.

    A passive checkpoint copies the WAL while appends go on, but the WAL only
    starts over from its beginning when a write begins with every frame in it
    copied. Under sustained appends that never happens (frames keep arriving
    during each checkpoint), and the WAL file grew without bound: about 0.2 GB
    per 10 s of 50 streams. So when a checkpoint leaves the WAL longer than
    :data:`RESTART_FRAMES`, it raises :attr:`wal_long`, and the writer, after
    its next commit, copies the few frames that arrived meanwhile itself (a
    millisecond or two): its next write then starts the WAL over. The writer
    does it, not this thread, because a checkpoint that must wait for the
    writer to pause never gets its turn while the writer never pauses.

    Starting over reuses the file without shrinking it, so a burst (one
    message to the demo model made a 354 MB WAL) left a file that big until
    shutdown. Once no frame has arrived for a whole interval and everything is
    copied, a file longer than :data:`TRUNCATE_BYTES` is truncated (a
    ``TRUNCATE`` checkpoint: it holds the write lock for the few milliseconds
    the truncation takes, and gives up after :data:`BUSY_TIMEOUT` if the
    writer is busy). Writes that never pause long enough are covered by the
    writer's ``journal_size_limit``.
    """

    INTERVAL = 1.0
    #: WAL length (in pages) past which the writer finishes a checkpoint.
    RESTART_FRAMES = 4096
    #: A quiet WAL file longer than this is truncated (SQLite's default
    #: checkpointing keeps a WAL at about this size).
    TRUNCATE_BYTES = 4 << 20
    #: Seconds a truncating checkpoint waits for the writer before trying later.
    BUSY_TIMEOUT = 0.1

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        #: Set by this thread, cleared by the writer (plain assignments: no lock needed).
        self.wal_long = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="tether-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        db = sqlite3.connect(
            self._path, timeout=self.BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        last = -1  # the WAL's length in frames at the previous checkpoint
        failing = False
        try:
            while not self._stopping.wait(self.INTERVAL):
                try:
                    last = self._checkpoint(db, last)
                except sqlite3.Error as err:
                    if not failing:  # once per outage: a full disk fails every second
                        log.warning("WAL checkpoint failed (will retry): %s", err)
                    failing = True
                    continue
                failing = False
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as err:  # the next start copies the WAL instead
                log.warning("final WAL checkpoint failed: %s", err)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection, last: int) -> int:
        """Copy what the WAL holds; truncate it if it has gone quiet; return its length."""
        _, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self.RESTART_FRAMES:
            self.wal_long = True
        if frames == copied == last and self._wal_bytes() > self.TRUNCATE_BYTES:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(frames)

    def _wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


class SqlitePersistence:
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DataDirLocked(
                f"{path} is in use by another tether process; one process owns a SQLite log"
            ) from None
        # The writer waits (up to 5 s) rather than fails while the checkpointer
        # truncates the WAL, which holds the write lock for a few milliseconds.
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=OFF")
        # Checkpoints copy the WAL into the database file and fsync it, which
        # can take hundreds of milliseconds: a thread of ours does them, so the
        # event loop (which commits appends) never waits for one.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        # When the writer starts the WAL over, it cuts a longer file down to
        # this: a WAL that a burst made big shrinks even if writes never pause.
        self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        self._checkpointer = _Checkpointer(path)
        self._refusals = _DiskRefusals(path)
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM streams").fetchone()
        self._next_id = int(row[0]) + 1

    def load(self, path: str) -> StreamMeta | None:
        r = self._db.execute(f"SELECT {_COLUMNS} FROM streams WHERE path = ?", (path,)).fetchone()
        return None if r is None else self._with_tail(_from_row(r))

    def load_id(self, stream_id: int) -> StreamMeta | None:
        r = self._db.execute(
            f"SELECT {_COLUMNS} FROM streams WHERE id = ?", (stream_id,)
        ).fetchone()
        return None if r is None else self._with_tail(_from_row(r))

    def _with_tail(self, meta: StreamMeta) -> StreamMeta:
        """Appends do not rewrite the stream's record: its tail is its last row's end."""
        r = self._db.execute(
            'SELECT "end" FROM chunks WHERE stream = ? ORDER BY start DESC LIMIT 1', (meta.id,)
        ).fetchone()
        if r is not None and r[0] > meta.tail:
            meta.tail = int(r[0])
        return meta

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def producer(self, stream_id: int, producer_id: str) -> tuple[int, int] | None:
        r = self._db.execute(
            "SELECT epoch, seq FROM producers WHERE stream = ? AND producer = ?",
            (stream_id, producer_id),
        ).fetchone()
        return None if r is None else (int(r[0]), int(r[1]))

    def rows(self, stream_id: int, lo: int, hi: int, max_bytes: int) -> list[RowFields]:
        # The row holding ``lo`` may start before it (a byte chunk read from its middle).
        first = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM chunks WHERE stream = ? AND start <= ? "
            "ORDER BY start DESC LIMIT 1",
            (stream_id, lo),
        ).fetchone()
        out: list[RowFields] = []
        size = 0
        if first is not None:
            _start, end, _batch, data = first
            if end > lo:
                out.append(first)
                size = len(data)
                if size >= max_bytes:
                    return out
        cur = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM chunks WHERE stream = ? AND start > ? "
            "AND start < ? ORDER BY start",
            (stream_id, lo, hi),
        )
        while size < max_bytes:
            batch = cur.fetchmany(256)
            if not batch:
                break
            for row in batch:
                out.append(row)
                _start, _end, _batch, data = row
                size += len(data)
                if size >= max_bytes:
                    break
        cur.close()
        return out

    def batch_extent(self, stream_id: int, pos: int, hi: int) -> Extent | None:
        found = self._db.execute(
            'SELECT batch, "end" FROM chunks WHERE stream = ? AND start <= ? '
            "ORDER BY start DESC LIMIT 1",
            (stream_id, pos),
        ).fetchone()
        if found is None:
            return None
        batch, row_end = found
        if row_end <= pos:
            return None
        (end,) = self._db.execute(
            'SELECT MAX("end") FROM chunks WHERE stream = ? AND batch = ?', (stream_id, batch)
        ).fetchone()
        return Extent(int(batch), int(end))

    def write(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow] | None = None,
        producers: list[ProducerState] | None = None,
        deletes: list[int] | None = None,
    ) -> None:
        db = self._db
        with self._refusals:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._statements(metas, rows, producers, deletes)
                db.execute("COMMIT")
            except BaseException:
                self.rollback()
                raise
        self._committed()

    def write_deferred(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow],
        producers: list[ProducerState],
    ) -> None:
        """Like ``write``, in a transaction left open for :meth:`commit` (group commit).

        On an error the caller rolls the whole group back: statements already
        run in the open transaction cannot be told apart from this write's.
        """
        self.begin_deferred()
        with self._refusals:
            self._statements(metas, rows, producers, None)

    def begin_deferred(self) -> None:
        if not self._db.in_transaction:
            with self._refusals:
                self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self._db.in_transaction:
            with self._refusals:
                self._db.execute("COMMIT")
            self._committed()

    def _committed(self) -> None:
        self._refusals.succeeded()
        self._finish_checkpoint()

    def _finish_checkpoint(self) -> None:
        """Copy what the last checkpoint left, if the WAL is long (see ``_Checkpointer``)."""
        if not self._checkpointer.wal_long:
            return
        self._checkpointer.wal_long = False
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as err:  # the commit stands; the next checkpoint tries again
            log.warning("WAL checkpoint failed (will retry): %s", err)

    def rollback(self) -> None:
        # After a failed write SQLite may have rolled back already: a second
        # ROLLBACK would fail, and hide why the write did.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _statements(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow] | None,
        producers: list[ProducerState] | None,
        deletes: list[int] | None,
    ) -> None:
        db = self._db
        if rows:
            if len(rows) == 1:
                sid, row = rows[0]
                db.execute(_INSERT_ROW, (sid, row.start, row.end, row.batch, row.data))
            else:
                db.executemany(
                    _INSERT_ROW, [(sid, r.start, r.end, r.batch, r.data) for sid, r in rows]
                )
        for sid, pid, epoch, seq in producers or ():
            db.execute(
                "INSERT OR REPLACE INTO producers VALUES (?, ?, ?, ?)", (sid, pid, epoch, seq)
            )
        for sid in deletes or ():
            db.execute("DELETE FROM chunks WHERE stream = ?", (sid,))
            db.execute("DELETE FROM producers WHERE stream = ?", (sid,))
            db.execute("DELETE FROM streams WHERE id = ?", (sid,))
        for meta in metas:
            db.execute(_UPSERT, _to_row(meta))

    def expired(self, now: float) -> list[str]:
        rows = self._db.execute(
            "SELECT path FROM streams WHERE soft_deleted = 0 AND "
            "((expires_at IS NOT NULL AND expires_at <= ?) OR "
            "(expires_at IS NULL AND ttl IS NOT NULL AND accessed_at + ttl <= ?))",
            (now, now),
        ).fetchall()
        return [r[0] for r in rows]

    def paths(self, prefix: str, after: str | None, limit: int) -> list[str]:
        # A range on the path's unique index: the prefix's first and just-past-last strings.
        low = prefix if after is None or after < prefix else after
        rows = self._db.execute(
            "SELECT path FROM streams WHERE path >= ? AND path < ? AND path != ? "
            "ORDER BY path LIMIT ?",
            (low, prefix + "\U0010ffff", after or "", limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def put_record(self, namespace: str, key: str, value: bytes) -> None:
        with self._refusals:
            self._db.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (namespace, key, value)
            )

    def get_record(self, namespace: str, key: str) -> bytes | None:
        r = self._db.execute(
            "SELECT value FROM records WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return None if r is None else bytes(r[0])

    def list_records(self, namespace: str) -> list[tuple[str, bytes]]:
        rows = self._db.execute(
            "SELECT key, value FROM records WHERE namespace = ? ORDER BY key", (namespace,)
        ).fetchall()
        return [(str(k), bytes(v)) for k, v in rows]

    def delete_record(self, namespace: str, key: str) -> None:
        with self._refusals:
            self._db.execute(
                "DELETE FROM records WHERE namespace = ? AND key = ?", (namespace, key)
            )

    def index_put(self, name: str, member: str, key: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO idx VALUES (?, ?, ?)", (name, member, key))

    def index_remove(self, name: str, member: str) -> None:
        self._db.execute("DELETE FROM idx WHERE name = ? AND member = ?", (name, member))

    def index_page(self, name: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT key, member FROM idx WHERE name = ? AND key > ? ORDER BY key LIMIT ?",
            (name, after or "", limit),
        ).fetchall()
        return [(str(k), str(m)) for k, m in rows]

    def index_count(self, name: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM idx WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()
        os.close(self._lock_fd)


class SqliteStore(LocalStore):
    def __init__(
        self,
        path: Path,
        synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(SqlitePersistence(path, synchronous), clock)
        #: The data file (the server's control socket for its webhook keys lives beside it).
        self.path = path
