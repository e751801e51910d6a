"""Expiry: a sliding TTL and an absolute Stream-Expires-At, on both backends.

A TTL counts from the last read or append (HEAD does not renew it); an
``expires_at`` is fixed. An expired stream is gone on the next access even if
no sweep ran, and ``sweep()`` removes expired streams nobody touches. A source
that expires while forks read through it answers "gone" but keeps its data for
them until the last fork goes. Time comes from a fake clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tether.store import local
from tether.store.base import AppendRequest, CreateRequest
from tether.store.errors import StreamConflict, StreamGone, StreamNotFound
from tether.store.local import ACCESS_PERSIST_INTERVAL, LocalStore

from .conftest import FakeClock, make_store

BYTES = "application/octet-stream"


async def assert_not_found(store: LocalStore, path: str) -> None:
    with pytest.raises(StreamNotFound):
        await store.head(path)


async def read_all(store: LocalStore, path: str) -> bytes:
    res = await store.read(path, 0, 1 << 20)
    assert res.up_to_date
    return b"".join(res.chunks)


# -- sliding TTL ---------------------------------------------------------------


async def test_a_stream_with_a_ttl_expires_ttl_seconds_after_creation_if_untouched(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10))
    clock.advance(9.999)
    assert (await store.head("s")).ttl == 10
    clock.advance(0.001)
    await assert_not_found(store, "s")


async def test_a_read_renews_the_ttl(store: LocalStore, clock: FakeClock) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10, messages=[b"x"]))
    clock.advance(6)
    await store.read("s", 0, 100)
    clock.advance(9.9)  # 15.9 s after creation, 9.9 s after the read
    assert (await store.head("s")).tail == 1
    clock.advance(0.1)
    await assert_not_found(store, "s")


async def test_a_read_from_the_tail_renews_the_ttl(store: LocalStore, clock: FakeClock) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10))
    clock.advance(6)
    await store.read("s", None, 100)
    clock.advance(9.9)
    await store.head("s")
    clock.advance(0.1)
    await assert_not_found(store, "s")


async def test_an_append_renews_the_ttl(store: LocalStore, clock: FakeClock) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10))
    clock.advance(6)
    await store.append("s", AppendRequest([b"x"], BYTES))
    clock.advance(9.9)
    assert (await store.head("s")).tail == 1
    clock.advance(0.1)
    await assert_not_found(store, "s")


async def test_head_does_not_renew_the_ttl(store: LocalStore, clock: FakeClock) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10))
    for _ in range(9):
        clock.advance(1)
        await store.head("s")
    clock.advance(1)
    await assert_not_found(store, "s")


async def test_an_idempotent_create_does_not_renew_the_ttl(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10))
    clock.advance(6)
    assert not (await store.create("s", CreateRequest(BYTES, ttl=10))).created
    clock.advance(4)
    await assert_not_found(store, "s")


# -- absolute expiry -------------------------------------------------------------


async def test_expires_at_is_not_renewed_by_reads_or_appends(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("s", CreateRequest(BYTES, expires_at=clock.now + 10))
    for _ in range(9):
        clock.advance(1)
        await store.append("s", AppendRequest([b"x"], BYTES))
        await store.read("s", 0, 100)
    clock.advance(0.999)
    assert (await store.head("s")).tail == 9
    clock.advance(0.001)
    await assert_not_found(store, "s")


# -- what expiry does ------------------------------------------------------------


async def test_every_operation_on_an_expired_stream_finds_nothing_without_a_sweep(
    store: LocalStore, clock: FakeClock
) -> None:
    for path in ("head", "read", "append", "delete", "fork-from"):
        await store.create(path, CreateRequest(BYTES, ttl=5, messages=[b"data"]))
    clock.advance(5)
    with pytest.raises(StreamNotFound):
        await store.head("head")
    with pytest.raises(StreamNotFound):
        await store.read("read", 0, 100)
    with pytest.raises(StreamNotFound):
        await store.append("append", AppendRequest([b"more"], BYTES))
    with pytest.raises(StreamNotFound):
        await store.delete("delete")
    with pytest.raises(StreamNotFound):
        await store.create("fork", CreateRequest(None, fork_from="fork-from"))


async def test_the_path_of_an_expired_stream_can_be_created_again_empty(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("s", CreateRequest(BYTES, expires_at=clock.now + 5, messages=[b"old"]))
    clock.advance(5)
    # A different configuration is no conflict: the old stream is gone.
    created = await store.create("s", CreateRequest("text/plain"))
    assert (created.created, created.meta.tail, created.meta.expires_at) == (True, 0, None)
    assert await read_all(store, "s") == b""


async def test_sweep_removes_expired_streams_nobody_touches_and_counts_them(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("short-ttl", CreateRequest(BYTES, ttl=5))
    await store.create("deadline", CreateRequest(BYTES, expires_at=clock.now + 5))
    await store.create("long-ttl", CreateRequest(BYTES, ttl=50))
    await store.create("forever", CreateRequest(BYTES))
    clock.advance(4)
    assert store.sweep() == 0
    clock.advance(1)
    assert store.sweep() == 2
    assert store.sweep() == 0
    for path in ("short-ttl", "deadline"):
        await assert_not_found(store, path)
    for path in ("long-ttl", "forever"):
        await store.head(path)


async def test_sweep_spares_a_stream_whose_ttl_a_recent_read_renewed(
    store: LocalStore, clock: FakeClock
) -> None:
    """The renewal need not be written through yet (see ACCESS_PERSIST_INTERVAL):
    the sweep must not go by a stale record."""
    await store.create("s", CreateRequest(BYTES, ttl=10))
    await store.read("s", 0, 100)
    clock.advance(ACCESS_PERSIST_INTERVAL / 2)
    await store.read("s", 0, 100)  # alive until 10 s from now
    clock.advance(9.9)
    assert store.sweep() == 0
    assert (await store.head("s")).ttl == 10


async def test_sweep_spares_a_stream_whose_ttl_a_recent_append_renewed(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("s", CreateRequest(BYTES, ttl=10))
    await store.append("s", AppendRequest([b"a"], BYTES))
    clock.advance(ACCESS_PERSIST_INTERVAL / 2)
    await store.append("s", AppendRequest([b"b"], BYTES))  # alive until 10 s from now
    clock.advance(9.9)
    assert store.sweep() == 0
    assert await read_all(store, "s") == b"ab"


async def test_the_background_sweeper_expires_streams_and_wakes_their_live_readers(
    backend: str, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "SWEEP_INTERVAL", 0.01)
    store = make_store(backend, tmp_path / "tether.db", clock)
    await store.open()  # starts the sweeper
    try:
        await store.create("s", CreateRequest(BYTES, ttl=5))
        store.notifier.subscribe("s")
        pending = store.notifier.watch("s")
        clock.advance(5)
        # Nobody touches the stream: only the sweeper can notice it expired.
        event = await asyncio.wait_for(pending, timeout=5)
        assert event.deleted
        await assert_not_found(store, "s")
        store.notifier.unsubscribe("s")
    finally:
        await store.aclose()


# -- expiry and forks ------------------------------------------------------------


@pytest.mark.parametrize("expire", ["on access", "by sweep"])
async def test_an_expired_source_with_a_live_fork_is_gone_while_the_fork_still_reads(
    store: LocalStore, clock: FakeClock, expire: str
) -> None:
    await store.create("src", CreateRequest(BYTES, ttl=10, messages=[b"hello "]))
    await store.create("fork", CreateRequest(None, fork_from="src", ttl=1000))
    await store.append("fork", AppendRequest([b"fork"], BYTES))
    clock.advance(10)
    if expire == "by sweep":
        assert store.sweep() == 1
        assert store.sweep() == 0  # already gone: not expired twice

    with pytest.raises(StreamGone):
        await store.head("src")
    with pytest.raises(StreamGone):
        await store.read("src", 0, 100)
    with pytest.raises(StreamGone):
        await store.append("src", AppendRequest([b"x"], BYTES))
    # Its path stays reserved, and it cannot be forked any more.
    with pytest.raises(StreamConflict):
        await store.create("src", CreateRequest(BYTES))
    with pytest.raises(StreamConflict):
        await store.create("other", CreateRequest(None, fork_from="src"))
    assert await read_all(store, "fork") == b"hello fork"


async def test_an_expired_source_is_removed_for_good_with_its_last_fork(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("src", CreateRequest(BYTES, ttl=10, messages=[b"x"]))
    await store.create("f1", CreateRequest(None, fork_from="src", ttl=1000))
    await store.create("f2", CreateRequest(None, fork_from="src", ttl=1000))
    clock.advance(10)
    assert store.sweep() == 1

    await store.delete("f1")
    with pytest.raises(StreamGone):
        await store.head("src")
    await store.delete("f2")
    await assert_not_found(store, "src")
    assert (await store.create("src", CreateRequest(BYTES))).created


@pytest.mark.parametrize("expire", ["on access", "by sweep"])
async def test_when_the_last_fork_expires_its_expired_source_goes_with_it(
    store: LocalStore, clock: FakeClock, expire: str
) -> None:
    await store.create("src", CreateRequest(BYTES, ttl=10, messages=[b"x"]))
    await store.create("fork", CreateRequest(None, fork_from="src", ttl=20))
    clock.advance(10)
    with pytest.raises(StreamGone):
        await store.head("src")
    clock.advance(10)
    if expire == "by sweep":
        assert store.sweep() == 1
    else:
        await assert_not_found(store, "fork")
    await assert_not_found(store, "src")
    await assert_not_found(store, "fork")
    assert (await store.create("src", CreateRequest(BYTES))).created


async def test_a_fork_inherits_its_sources_ttl_unless_it_sets_its_own(
    store: LocalStore, clock: FakeClock
) -> None:
    await store.create("src", CreateRequest(BYTES, ttl=10))
    clock.advance(5)
    inherited = await store.create("inherits", CreateRequest(None, fork_from="src"))
    assert inherited.meta.ttl == 10
    own = await store.create("own", CreateRequest(None, fork_from="src", expires_at=clock.now + 1))
    assert (own.meta.ttl, own.meta.expires_at) == (None, clock.now + 1)
    clock.advance(1)
    await assert_not_found(store, "own")
    clock.advance(9)  # 10 s after the fork was made
    await assert_not_found(store, "inherits")
