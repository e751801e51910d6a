"""Fold checkpoints in the session service, over a real SQLite file.

A fold resumed from a checkpoint taken after any event of a golden log ends
where the fold of the whole log ends; a checkpoint holds only for its own
stream, format and reach; the checkpoint write is not on an append's path; and
the folds kept in memory stay within their byte bound.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from sessions.test_fold_golden import FIXTURES, load
from tether.sessions import checkpoints
from tether.sessions.events import PART_DELTA, PART_END, PART_START, USER_MESSAGE, event
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionService, stream_name
from tether.store.base import StreamMeta
from tether.store.sqlite import SqliteStore


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_fold_resumed_from_a_checkpoint_after_any_event_ends_as_the_whole_fold(
    path: Path,
) -> None:
    fixture = load(path)
    events = fixture["events"]
    whole = SessionFold()
    whole.apply_all(events)
    for cut in range(len(events) + 1):
        before = SessionFold()
        before.apply_all(events[:cut])
        resumed = SessionFold.load(orjson.loads(orjson.dumps(before.dump())))
        resumed.apply_all(events[cut:])
        assert resumed.snapshot() == fixture["snapshot"], cut
        # All of it, not only what the snapshot shows (dedup, tool calls, journals...).
        assert everything(resumed) == everything(whole), cut


def everything(fold: SessionFold) -> str:
    """All the fold holds, sets in order."""
    dump = fold.dump()
    dump["seen"].sort()
    dump["cancels"].sort()
    return json.dumps(dump, sort_keys=True)


class _State:
    def __init__(self, fold: SessionFold, position: int, stream: tuple[int, float]) -> None:
        self.fold, self.position, self.folded_bytes, self.stream = fold, position, 10, stream


def _meta(tail: int, stream_id: int = 7, created_at: float = 1.5) -> StreamMeta:
    return StreamMeta(stream_id, "sessions/x", "application/json", created_at, tail=tail)


def test_a_checkpoint_holds_only_for_its_format_stream_and_reach() -> None:
    fold = SessionFold()
    fold.apply_all(load(FIXTURES[0])["events"])
    raw = checkpoints.encode(_State(fold, 5, (7, 1.5)))
    found = checkpoints.decode(raw, _meta(5))
    assert found is not None and found.position == 5
    assert found.fold.snapshot() == fold.snapshot()
    assert checkpoints.decode(raw, _meta(4)) is None  # the stream does not reach it
    assert checkpoints.decode(raw, _meta(5, stream_id=8)) is None  # another stream
    assert checkpoints.decode(raw, _meta(5, created_at=2.0)) is None  # created again
    older = raw.replace(checkpoints.FORMAT.encode(), b"0123456789abcdef")
    assert checkpoints.decode(older, _meta(5)) is None
    assert checkpoints.decode(b"{not json", _meta(5)) is None


class GatedStore(SqliteStore):
    """A real SQLite store whose checkpoint writes wait until the test lets them through."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = asyncio.Event()
        self.go = asyncio.Event()

    async def put_record(self, namespace: str, key: str, value: bytes) -> None:
        if namespace == checkpoints.NAMESPACE:
            self.writing.set()
            await self.go.wait()
        await super().put_record(namespace, key, value)


def _turn(n: int, deltas: int, size: int = 8) -> list[dict[str, Any]]:
    mid = f"msg_{n}"
    out = [
        event(USER_MESSAGE, message_id=mid, parts=[{"type": "text", "text": "hi"}]),
        event(PART_START, message_id=mid, part_id=f"{mid}:9", kind="text"),
    ]
    out += [event(PART_DELTA, part_id=f"{mid}:9", delta="x" * size) for _ in range(deltas)]
    return [*out, event(PART_END, part_id=f"{mid}:9")]


async def test_an_append_does_not_wait_for_the_checkpoint_it_starts(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "tether.db")
    await store.open()
    try:
        service = SessionService(store, checkpoint_every=10)
        record = await service.create(owner=None, model=None, agent=None, system=None, title=None)
        await service.append(record.id, _turn(0, 20))
        # The append that passed the mark has its answer while its checkpoint write waits.
        await asyncio.wait_for(store.writing.wait(), 30)
        tail = await service.append(record.id, _turn(1, 20))
        assert await store.get_record(checkpoints.NAMESPACE, record.id) is None
        store.go.set()
        await service.aclose()  # lets the write under way finish
        # What was appended during the write is checkpointed after it, by the same task.
        found = checkpoints.decode(
            await store.get_record(checkpoints.NAMESPACE, record.id) or b"",
            await store.head(stream_name(record.id)),
        )
        assert found is not None and found.position == tail
    finally:
        await store.aclose()


async def test_the_folds_in_memory_stay_within_their_byte_bound(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tether.db")
    await store.open()
    bound = 2_000_000
    try:
        service = SessionService(store, fold_cache_bytes=bound, checkpoint_every=10**9)
        ids = []
        for _ in range(30):  # each about 300 kB of events: 30 of them are 9 MB
            record = await service.create(
                owner=None, model=None, agent=None, system=None, title=None
            )
            await service.append(record.id, _turn(0, 1000, size=200))
            ids.append(record.id)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for sid in ids:
            await service.state(sid)
            cached = service._states.values()
            assert sum(s.size for s in cached) == service._cached_bytes <= bound
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert held <= bound  # what the estimate bounds is what memory holds, or more
        assert ids[-1] in service._states and ids[0] not in service._states
        # A session dropped from memory is rebuilt from its stream when next read.
        assert len((await service.state(ids[0])).fold.messages) == 1
    finally:
        await store.aclose()
