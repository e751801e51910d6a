"""Group commit (SQLite): an iteration's first append commits alone, the rest share one.

Each grouped append is answered, and its readers notified, only once the
commit that holds it is done; until then nobody reads it. A failed commit
fails every append of the group and leaves the log as it was.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tether.store.base import AppendRequest, CreateRequest
from tether.store.sqlite import SqliteStore

JSON = "application/json"


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SqliteStore(tmp_path / "log.db")
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


def msg(n: int) -> bytes:
    return b'{"n": %d}' % n


def count_commits(store: SqliteStore) -> list[int]:
    """From now on, ``[n]``: the commits the store has made."""
    commits = [0]
    commit = store._db.commit

    def counting() -> None:
        commits[0] += 1
        commit()

    store._db.commit = counting  # type: ignore[method-assign]
    return commits


async def test_a_lone_append_is_committed_and_answered_at_once(store: SqliteStore) -> None:
    await store.create("s", CreateRequest(JSON))
    await asyncio.sleep(0)  # a new iteration
    commits = count_commits(store)
    appended = asyncio.ensure_future(store.append("s", AppendRequest([msg(0)], JSON)))
    await asyncio.sleep(0)  # its task has run once
    assert appended.done() and appended.result().tail == 1
    assert commits == [0]  # committed alone, not in a group
    assert (await store.read("s", 0, 1 << 20)).chunks == [msg(0)]


async def test_the_appends_after_an_iterations_first_share_one_commit(store: SqliteStore) -> None:
    for name in ("a", "b"):
        await store.create(name, CreateRequest(JSON))
    commits = count_commits(store)
    results = await asyncio.gather(
        *(store.append(name, AppendRequest([msg(i)], JSON)) for i in range(5) for name in "ab")
    )
    assert commits == [1]  # the first went alone; the other nine in one group
    assert sorted(r.tail for r in results) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for name in "ab":
        res = await store.read(name, 0, 1 << 20)
        assert res.chunks == [msg(i) for i in range(5)]


async def test_uncommitted_appends_are_not_read_nor_in_head(store: SqliteStore) -> None:
    await store.create("s", CreateRequest(JSON))
    first = asyncio.ensure_future(store.append("s", AppendRequest([msg(0)], JSON)))
    pending = asyncio.ensure_future(store.append("s", AppendRequest([msg(1)], JSON)))
    await asyncio.sleep(0)  # the first is committed; the second written, not committed
    assert first.done() and not pending.done()
    # (Reads run synchronously, before the commit scheduled for the next iteration.)
    assert (await store.head("s")).tail == 1
    assert (await store.read("s", 0, 1 << 20)).chunks == [msg(0)]
    assert (await pending).tail == 2
    assert (await store.read("s", 0, 1 << 20)).chunks == [msg(0), msg(1)]


async def test_other_writes_commit_the_pending_group_first(store: SqliteStore) -> None:
    await store.create("s", CreateRequest(JSON))
    first = asyncio.ensure_future(store.append("s", AppendRequest([msg(0)], JSON)))
    pending = asyncio.ensure_future(store.append("s", AppendRequest([msg(1)], JSON)))
    await asyncio.sleep(0)
    await store.create("t", CreateRequest(JSON))  # commits the group before its own write
    assert (await store.read("s", 0, 1 << 20)).chunks == [msg(0), msg(1)]
    assert (await first).tail == 1 and (await pending).tail == 2


async def test_record_writes_join_the_appends_commit(store: SqliteStore) -> None:
    await store.create("s", CreateRequest(JSON))
    await store.put_record("runs", "old", b"1")
    commits = count_commits(store)
    await asyncio.gather(
        store.put_record("runs", "new", b"2"),
        store.append("s", AppendRequest([msg(0)], JSON)),
        store.delete_record("runs", "old"),
    )
    assert commits == [1]
    assert await store.list_records("runs") == [("new", b"2")]


async def test_a_record_is_read_only_once_its_write_is_committed(
    store: SqliteStore, tmp_path: Path
) -> None:
    import sqlite3

    pending = asyncio.ensure_future(store.put_record("ns", "k", b"v"))
    await asyncio.sleep(0)  # written in the open group, not committed
    assert not pending.done()
    assert await store.get_record("ns", "k") == b"v"  # the read commits the group first
    other = sqlite3.connect(tmp_path / "log.db")
    try:  # another connection sees it: it was committed before the read answered
        row = other.execute("SELECT value FROM records WHERE key = 'k'").fetchone()
    finally:
        other.close()
    assert row == (b"v",)
    await pending


async def test_a_failed_commit_fails_its_record_writes_too(store: SqliteStore) -> None:
    await store.put_record("ns", "kept", b"1")

    def failing() -> None:
        raise OSError("disk full")

    commit = store._db.commit
    store._db.commit = failing  # type: ignore[method-assign]
    results = await asyncio.gather(
        store.put_record("ns", "lost", b"2"),
        store.delete_record("ns", "kept"),
        return_exceptions=True,
    )
    store._db.commit = commit  # type: ignore[method-assign]
    assert all(isinstance(r, OSError) for r in results)
    assert await store.list_records("ns") == [("kept", b"1")]


async def test_a_failed_commit_fails_the_group_and_keeps_the_log(store: SqliteStore) -> None:
    await store.create("s", CreateRequest(JSON))

    def failing() -> None:
        raise OSError("disk full")

    real = store._db.commit
    store._db.commit = failing  # type: ignore[method-assign]
    first, grouped = await asyncio.gather(
        store.append("s", AppendRequest([msg(0)], JSON)),
        store.append("s", AppendRequest([msg(1)], JSON)),
        return_exceptions=True,
    )
    store._db.commit = real  # type: ignore[method-assign]
    assert not isinstance(first, BaseException) and first.tail == 1  # committed alone
    assert isinstance(grouped, OSError)
    assert (await store.head("s")).tail == 1
    assert (await store.append("s", AppendRequest([msg(2)], JSON))).tail == 2
    assert (await store.read("s", 0, 1 << 20)).chunks == [msg(0), msg(2)]
