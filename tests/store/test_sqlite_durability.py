"""SqliteStore: what was answered survives closing and reopening the file.

Data, idempotent-producer state, Stream-Seq, closure, forks, soft deletes and
expiry settings all come back from the file; a second store on a file that is
still open is refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.store.base import AppendRequest, CreateRequest, Producer
from tether.store.errors import (
    SeqConflict,
    SequenceGap,
    StaleEpoch,
    StreamClosed,
    StreamConflict,
    StreamGone,
    StreamNotFound,
)
from tether.store.sqlite import DataDirLocked, SqliteStore, _Checkpointer

from .conftest import FakeClock

BYTES = "application/octet-stream"
JSON = "application/json"


class Reopenable:
    """One SQLite file, opened by one store at a time."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.path = path
        self.clock = clock
        self.store: SqliteStore | None = None

    async def open(self) -> SqliteStore:
        self.store = SqliteStore(self.path, clock=self.clock)
        await self.store.open()
        return self.store

    async def reopen(self) -> SqliteStore:
        await self.close()
        return await self.open()

    async def close(self) -> None:
        if self.store is not None:
            await self.store.aclose()
            self.store = None


@pytest.fixture
async def db(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reopenable]:
    r = Reopenable(tmp_path / "tether.db", clock)
    await r.open()
    try:
        yield r
    finally:
        await r.close()


async def read_all(store: SqliteStore, path: str, offset: int = 0) -> list[bytes]:
    """Every chunk from ``offset`` to the tail, following ``next``."""
    chunks: list[bytes] = []
    while True:
        res = await store.read(path, offset, 1 << 20)
        chunks.extend(res.chunks)
        offset = res.next
        if res.up_to_date:
            return chunks


async def test_appended_bytes_and_json_messages_survive_reopening(db: Reopenable) -> None:
    s = db.store
    assert s is not None
    await s.create("bin", CreateRequest(BYTES, messages=[b"hello "]))
    await s.append("bin", AppendRequest([b"wor"], BYTES))
    await s.append("bin", AppendRequest([b"ld"], BYTES))
    await s.create("msgs", CreateRequest(JSON, messages=[b'{"a":1}', b'{"b":2}']))
    await s.append("msgs", AppendRequest([b'"three"'], JSON))

    s = await db.reopen()

    assert b"".join(await read_all(s, "bin")) == b"hello world"
    assert (await s.head("bin")).tail == 11
    assert await read_all(s, "msgs") == [b'{"a":1}', b'{"b":2}', b'"three"']
    assert (await s.head("msgs")).tail == 3
    # Appends carry on from the tail that was on disk.
    assert (await s.append("bin", AppendRequest([b"!"], BYTES))).tail == 12
    assert (await s.append("msgs", AppendRequest([b"4"], JSON))).tail == 4
    assert b"".join(await read_all(s, "bin", 6)) == b"world!"


async def test_idempotent_producer_state_survives_reopening(db: Reopenable) -> None:
    s = db.store
    assert s is not None
    await s.create("p", CreateRequest(BYTES))
    await s.append("p", AppendRequest([b"a"], BYTES, producer=Producer("w", 1, 0)))
    await s.append("p", AppendRequest([b"b"], BYTES, producer=Producer("w", 1, 1)))

    s = await db.reopen()

    retry = await s.append("p", AppendRequest([b"b"], BYTES, producer=Producer("w", 1, 1)))
    assert (retry.appended, retry.tail, retry.producer_epoch, retry.producer_seq) == (
        False,
        2,
        1,
        1,
    )
    with pytest.raises(SequenceGap) as gap:
        await s.append("p", AppendRequest([b"d"], BYTES, producer=Producer("w", 1, 3)))
    assert (gap.value.expected, gap.value.received) == (2, 3)
    with pytest.raises(StaleEpoch) as stale:
        await s.append("p", AppendRequest([b"z"], BYTES, producer=Producer("w", 0, 0)))
    assert stale.value.current_epoch == 1
    nxt = await s.append("p", AppendRequest([b"c"], BYTES, producer=Producer("w", 1, 2)))
    assert (nxt.appended, nxt.tail, nxt.producer_seq) == (True, 3, 2)
    assert b"".join(await read_all(s, "p")) == b"abc"


async def test_stream_seq_survives_reopening(db: Reopenable) -> None:
    s = db.store
    assert s is not None
    await s.create("q", CreateRequest(BYTES))
    await s.append("q", AppendRequest([b"x"], BYTES, seq="005"))

    s = await db.reopen()

    for stale in ("004", "005"):
        with pytest.raises(SeqConflict):
            await s.append("q", AppendRequest([b"y"], BYTES, seq=stale))
    assert (await s.append("q", AppendRequest([b"y"], BYTES, seq="006"))).tail == 2


async def test_closure_survives_reopening(db: Reopenable) -> None:
    s = db.store
    assert s is not None
    await s.create("plain", CreateRequest(BYTES, messages=[b"done"], closed=True))
    await s.create("by-producer", CreateRequest(JSON))
    closing = AppendRequest([b'"bye"'], JSON, producer=Producer("w", 0, 0), close=True)
    await s.append("by-producer", closing)

    s = await db.reopen()

    for path, tail in (("plain", 4), ("by-producer", 1)):
        assert (await s.head(path)).closed
        res = await s.read(path, 0, 100)
        assert (res.next, res.up_to_date, res.closed) == (tail, True, True)
        with pytest.raises(StreamClosed):
            await s.append(path, AppendRequest([b"1"], None))
        # Closing again is harmless.
        again = await s.append(path, AppendRequest([], close=True))
        assert (again.tail, again.closed) == (tail, True)
    # The producer's retried closing append is recognised as a duplicate, not refused.
    retry = await s.append("by-producer", closing)
    assert (retry.appended, retry.closed, retry.tail) == (False, True, 1)


async def test_forks_survive_reopening_and_still_read_through_their_sources(
    db: Reopenable,
) -> None:
    s = db.store
    assert s is not None
    await s.create("src", CreateRequest(BYTES, messages=[b"01234"]))
    await s.append("src", AppendRequest([b"56789"], BYTES))
    # A fork 2 bytes into the second append, and a fork of that fork.
    await s.create("fork", CreateRequest(None, fork_from="src", fork_offset=5, fork_sub_offset=2))
    await s.append("fork", AppendRequest([b"ab"], BYTES))
    await s.create("forkfork", CreateRequest(None, fork_from="fork", fork_offset=8))
    await s.append("forkfork", AppendRequest([b"XY"], BYTES))
    await s.append("src", AppendRequest([b"tail"], BYTES))
    await s.create("empty-fork", CreateRequest(None, fork_from="src", fork_offset=3))

    s = await db.reopen()

    assert b"".join(await read_all(s, "src")) == b"0123456789tail"
    assert b"".join(await read_all(s, "fork")) == b"0123456ab"
    assert b"".join(await read_all(s, "forkfork")) == b"0123456aXY"
    assert b"".join(await read_all(s, "empty-fork")) == b"012"
    assert (await s.head("empty-fork")).tail == 3
    for offset in range(10):
        assert b"".join(await read_all(s, "forkfork", offset)) == b"0123456aXY"[offset:]
    # After reopening, appends to a source stay invisible to its forks and vice versa.
    await s.append("src", AppendRequest([b"!"], BYTES))
    await s.append("fork", AppendRequest([b"c"], BYTES))
    assert b"".join(await read_all(s, "fork")) == b"0123456abc"
    assert b"".join(await read_all(s, "forkfork")) == b"0123456aXY"
    assert b"".join(await read_all(s, "src")) == b"0123456789tail!"


async def test_deleted_source_stays_gone_after_reopening_until_its_last_fork_goes(
    db: Reopenable,
) -> None:
    s = db.store
    assert s is not None
    await s.create("src", CreateRequest(JSON, messages=[b"1", b"2"]))
    await s.create("fork", CreateRequest(None, fork_from="src"))
    await s.append("fork", AppendRequest([b"3"], JSON))
    await s.delete("src")

    s = await db.reopen()

    with pytest.raises(StreamGone):
        await s.head("src")
    with pytest.raises(StreamConflict):
        await s.create("src", CreateRequest(JSON))
    assert await read_all(s, "fork") == [b"1", b"2", b"3"]

    await s.delete("fork")
    with pytest.raises(StreamNotFound):
        await s.head("src")
    assert (await s.create("src", CreateRequest(JSON))).meta.tail == 0

    s = await db.reopen()
    assert (await s.head("src")).tail == 0
    with pytest.raises(StreamNotFound):
        await s.head("fork")


async def test_deleting_the_last_fork_after_reopening_cascades_up_a_chain_of_deleted_sources(
    db: Reopenable,
) -> None:
    s = db.store
    assert s is not None
    await s.create("a", CreateRequest(BYTES, messages=[b"aa"]))
    await s.create("b", CreateRequest(None, fork_from="a"))
    await s.create("c", CreateRequest(None, fork_from="b"))
    await s.delete("a")
    await s.delete("b")

    s = await db.reopen()

    assert b"".join(await read_all(s, "c")) == b"aa"
    await s.delete("c")
    for path in ("a", "b", "c"):
        with pytest.raises(StreamNotFound):
            await s.head(path)

    s = await db.reopen()
    for path in ("a", "b", "c"):
        with pytest.raises(StreamNotFound):
            await s.head(path)


async def test_a_stream_created_after_reopening_starts_empty_with_fresh_producer_state(
    db: Reopenable,
) -> None:
    s = db.store
    assert s is not None
    await s.create("keep", CreateRequest(BYTES))
    # The newest stream is deleted, so a new one may get its id after reopening.
    await s.create("gone", CreateRequest(BYTES, messages=[b"old"]))
    await s.append("gone", AppendRequest([b"!"], BYTES, producer=Producer("w", 0, 0)))
    await s.delete("gone")

    s = await db.reopen()

    for path in ("new", "gone"):
        created = await s.create(path, CreateRequest(BYTES))
        assert (created.created, created.meta.tail) == (True, 0)
        assert await read_all(s, path) == []
        first = await s.append(path, AppendRequest([b"x"], BYTES, producer=Producer("w", 0, 0)))
        assert (first.appended, first.tail) == (True, 1)


async def test_ttl_and_expires_at_survive_reopening(db: Reopenable, clock: FakeClock) -> None:
    s = db.store
    assert s is not None
    await s.create("ttl", CreateRequest(BYTES, ttl=60))
    await s.create("deadline", CreateRequest(BYTES, expires_at=clock.now + 30))

    s = await db.reopen()

    # Same configuration: an idempotent create, not a conflict.
    assert not (await s.create("ttl", CreateRequest(BYTES, ttl=60))).created
    again = CreateRequest(BYTES, expires_at=clock.now + 30)
    assert not (await s.create("deadline", again)).created
    with pytest.raises(StreamConflict):
        await s.create("ttl", CreateRequest(BYTES, ttl=61))

    clock.advance(30)
    with pytest.raises(StreamNotFound):
        await s.head("deadline")
    assert (await s.head("ttl")).ttl == 60
    clock.advance(30)
    with pytest.raises(StreamNotFound):
        await s.head("ttl")


async def test_a_second_store_on_an_open_file_is_refused(db: Reopenable) -> None:
    s = db.store
    assert s is not None
    await s.create("x", CreateRequest(BYTES, messages=[b"mine"]))

    with pytest.raises(DataDirLocked):
        SqliteStore(db.path)
    # The refusal did not disturb the owner.
    assert b"".join(await read_all(s, "x")) == b"mine"

    await db.close()
    s = await db.open()
    assert b"".join(await read_all(s, "x")) == b"mine"


def test_answered_appends_survive_the_process_dying_without_closing_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tether.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from pathlib import Path
        from tether.store.base import AppendRequest, CreateRequest, Producer
        from tether.store.sqlite import SqliteStore

        async def main():
            s = SqliteStore(Path({str(path)!r}))
            await s.open()
            await s.create("s", CreateRequest("application/octet-stream"))
            for i in range(50):
                req = AppendRequest([b"%02d" % i], None, producer=Producer("w", 0, i))
                await s.append("s", req)
            await s.append("s", AppendRequest([], close=True))
            os._exit(0)  # no aclose, no checkpoint: as if killed

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

    async def check() -> None:
        s = SqliteStore(path)  # the dead process's lock is gone with it
        await s.open()
        try:
            assert b"".join(await read_all(s, "s")) == b"".join(b"%02d" % i for i in range(50))
            assert (await s.head("s")).closed
            retry = await s.append("s", AppendRequest([b"49"], None, producer=Producer("w", 0, 49)))
            assert retry.appended is False
        finally:
            await s.aclose()

    asyncio.run(check())


async def test_the_wal_starts_over_under_appends_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passive checkpoints alone never empty a WAL that is written to all the time."""
    monkeypatch.setattr(_Checkpointer, "INTERVAL", 0.02)
    monkeypatch.setattr(_Checkpointer, "RESTART_FRAMES", 64)
    store = SqliteStore(tmp_path / "tether.db")
    await store.open()
    paths = [f"/s/{i}" for i in range(50)]
    try:
        for path in paths:
            await store.create(path, CreateRequest(JSON))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        appends = 0
        while loop.time() < deadline:
            msg = b'{"n": %d}' % appends
            await store.append(paths[appends % 50], AppendRequest([msg], JSON))
            appends += 1
        wal = (tmp_path / "tether.db-wal").stat().st_size
    finally:
        await store.aclose()
    # Each append writes at least one 4 KiB page to the WAL: a WAL that never
    # starts over ends up longer than appends x 4 KiB. One that does stays at
    # what a few checkpoint intervals write, however long the run.
    assert appends * 4096 > 4 * wal, (appends, wal)
