"""GroupCommit on its own, over a fake persistence: no store, no disk.

The pending group answers its writes, and publishes their notices in order,
only once one commit holds them all; until then readers get each stream as
last committed. When the group cannot be written or committed, every write in
it fails with the error, the transaction is rolled back, and the store is told
to forget what it cached of the group's streams. (test_group_commit.py checks
the same rules through SqliteStore.)
"""

from __future__ import annotations

import asyncio

import pytest

from tether.store.base import StreamMeta
from tether.store.group_commit import GroupCommit
from tether.store.notify import TailEvent, TailNotifier
from tether.store.persistence import ProducerState, StreamRow


class FakeGroupDb:
    """Records what GroupCommit asks of a persistence; fails on demand."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_commit: BaseException | None = None
        self.fail_write: BaseException | None = None

    def write_deferred(
        self,
        metas: list[StreamMeta],
        rows: list[StreamRow],
        producers: list[ProducerState],
    ) -> None:
        if self.fail_write is not None:
            raise self.fail_write
        self.calls.append(f"write {[meta.tail for meta in metas]}")

    def begin_deferred(self) -> None:
        self.calls.append("begin")

    def commit(self) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        self.calls.append("commit")

    def rollback(self) -> None:
        self.calls.append("rollback")


class Harness:
    def __init__(self) -> None:
        self.db = FakeGroupDb()
        self.notifier = TailNotifier()
        self.forgotten: list[int] = []
        self.group = GroupCommit(self.db, self.notifier, lambda m: self.forgotten.append(m.id))

    def watch(self, path: str) -> asyncio.Future[TailEvent]:
        self.notifier.subscribe(path)
        return self.notifier.watch(path)


def meta(stream_id: int, tail: int) -> StreamMeta:
    return StreamMeta(id=stream_id, path=f"s{stream_id}", content_type="application/json",
                      created_at=0.0, tail=tail)  # fmt: skip


async def test_joined_appends_are_answered_and_published_after_one_commit() -> None:
    h = Harness()
    event = h.watch("s1")
    h.group.write(meta(1, 0), [meta(1, 1)], [], [])
    first = asyncio.ensure_future(h.group.wait("s1", (0, 1, [b"a"], False)))
    h.group.write(meta(1, 1), [meta(1, 2)], [], [])
    second = asyncio.ensure_future(h.group.wait("s1", (1, 2, [b"b"], False)))
    await asyncio.sleep(0)  # both waiting; the commit is scheduled for the next iteration
    assert h.group.joins()
    assert h.group.last_committed(meta(1, 2)).tail == 0  # readers see the committed stream
    assert not first.done() and not event.done()
    await asyncio.gather(first, second)
    assert h.db.calls == ["write [1]", "write [2]", "commit"]
    got = await event
    assert (got.start, got.end, got.chunks) == (0, 1, [b"a"])
    assert (await got.next).chunks == [b"b"]
    assert h.group.last_committed(meta(1, 2)).tail == 2
    assert not h.group.joins()


async def test_a_failed_commit_fails_every_write_and_forgets_their_streams() -> None:
    h = Harness()
    h.db.fail_commit = OSError("disk full")
    h.group.write(meta(1, 0), [meta(1, 1)], [], [])
    h.group.write(meta(2, 5), [meta(2, 6)], [], [])
    results = await asyncio.gather(
        h.group.wait("s1", (0, 1, [b"a"], False)),
        h.group.wait("s2", (5, 6, [b"b"], False)),
        h.group.write_record("ns", lambda: None),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [OSError, OSError, OSError]
    assert h.db.calls[-1] == "rollback"
    assert sorted(h.forgotten) == [1, 2]
    assert h.group.last_committed(meta(1, 1)).tail == 1  # nothing is held back any more
    assert not h.group.joins()


async def test_a_write_that_fails_aborts_the_writes_already_in_the_group() -> None:
    h = Harness()
    h.group.write(meta(1, 0), [meta(1, 1)], [], [])
    earlier = asyncio.ensure_future(h.group.wait("s1", (0, 1, [b"a"], False)))
    await asyncio.sleep(0)
    h.db.fail_write = OSError("disk full")
    with pytest.raises(OSError):
        h.group.write(meta(1, 1), [meta(1, 2)], [], [])
    with pytest.raises(OSError):
        await earlier
    assert h.db.calls == ["write [1]", "rollback"]
    assert h.forgotten == [1]


async def test_a_record_read_commits_the_group_only_if_it_holds_that_namespace() -> None:
    h = Harness()
    written = asyncio.ensure_future(h.group.write_record("runs", lambda: None))
    await asyncio.sleep(0)
    h.group.flush_for("sessions")
    assert h.db.calls == ["begin"] and not written.done()
    h.group.flush_for("runs")
    assert h.db.calls == ["begin", "commit"]
    await written


async def test_after_an_append_committed_alone_the_rest_of_the_iteration_groups() -> None:
    h = Harness()
    assert not h.group.joins()
    h.group.group_rest_of_iteration()
    assert h.group.joins()
    await asyncio.sleep(0)  # the next iteration
    assert not h.group.joins()
