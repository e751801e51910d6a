"""The Redis store: the local stores' behaviour, plus what sharing Redis adds.

- The reference-model state machine of test_model.py, run against RedisStore.
- TTL, Expires-At, soft delete and cascade: the same scenarios run against the
  memory store and the Redis store (with the fake clock) and must agree, and
  random histories of them get the same answers, error messages included, from
  both.
- Replicas: two RedisStore instances on one Redis see each other's appends live
  through their own subscriber, producers stay exactly-once across them, and a
  process holds one pub/sub connection however many readers it has.
- Redis down: operations raise BackendUnavailable, and work again once Redis is
  back, without recreating the store; live readers pick up where they were.

Every test gets its own key prefix on a Redis server shared by the module, so
tests cannot see each other's streams; the crash tests start their own server.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from helpers.server import ServerFactory
from redis_server import RedisServer, running_redis
from tether.store import errors, redis_subscriber
from tether.store.base import (
    AppendRequest,
    CreateRequest,
    CreateResult,
    Producer,
    ReadResult,
    Store,
    StreamMeta,
)
from tether.store.factory import open_store
from tether.store.memory import MemoryStore
from tether.store.redis import RedisStore, redact
from tether.store.redis_scripts import Status, lua_status_constants
from tether.store.redis_subscriber import Subscriber
from tether.streams.tail import tail

from .conftest import FakeClock
from .test_model import MODEL_SETTINGS, StoreVersusModel

BYTES = "application/octet-stream"
TEXT = "text/plain"
JSON = "application/json"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


async def opened(store: RedisStore) -> RedisStore:
    await store.open()
    return store


@pytest.fixture
async def rstore(redis_server: RedisServer, prefix: str, clock: FakeClock) -> AsyncIterator[Store]:
    store = await opened(RedisStore(redis_server.url(), prefix=prefix, clock=clock))
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(params=("memory", "redis"))
async def any_store(
    request: pytest.FixtureRequest, prefix: str, clock: FakeClock
) -> AsyncIterator[Store]:
    """A store on the fake clock: memory (the reference) or Redis."""
    store: Store
    if request.param == "memory":
        store = MemoryStore(clock=clock)
        await store.open()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        store = await opened(RedisStore(server.url(), prefix=prefix, clock=clock))
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def replicas(redis_server: RedisServer, prefix: str) -> AsyncIterator[list[RedisStore]]:
    """Two stores on the same keys, as two tether processes would be (Redis's clock)."""
    stores = [await opened(RedisStore(redis_server.url(), prefix=prefix)) for _ in range(2)]
    try:
        yield stores
    finally:
        for store in stores:
            await store.aclose()


async def content(store: Store, path: str, offset: int = 0) -> list[bytes]:
    chunks: list[bytes] = []
    while True:
        res = await store.read(path, offset, 1 << 20)
        chunks += res.chunks
        offset = res.next
        if res.up_to_date:
            return chunks


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Follower:
    """A live reader (streams.tail, as SSE readers use it) collecting what it sees."""

    def __init__(self, store: Store, path: str, offset: int = 0) -> None:
        self.store = store
        self.path = path
        self.batches: list[tuple[int, list[bytes], int]] = []
        self.arrived: list[float] = []
        self.changed = asyncio.Event()
        self.ended = False
        self.task = asyncio.create_task(self._run(offset))

    async def _run(self, offset: int) -> None:
        async for batch in tail(self.store, self.path, offset, heartbeat=0.5):
            if batch is not None:
                self.batches.append(batch)
                self.arrived.append(time.monotonic())
                self.changed.set()
        self.ended = True
        self.changed.set()

    def data(self) -> bytes:
        return b"".join(c for _, chunks, _ in self.batches for c in chunks)

    def messages(self) -> list[bytes]:
        return [c for _, chunks, _ in self.batches for c in chunks]

    async def idle(self) -> None:
        """Wait until the reader has caught up and waits on the notifier."""
        notifier = self.store.notifier
        await until(lambda: notifier.watcher_count(self.path) > 0)
        await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


# -- the reference model --------------------------------------------------------


def test_redis_store_agrees_with_reference_model(redis_server: RedisServer, prefix: str) -> None:
    counter = itertools.count()

    def make_store() -> RedisStore:
        return RedisStore(redis_server.url(), prefix=f"{prefix}{next(counter)}:")

    run_state_machine_as_test(lambda: StoreVersusModel(make_store), settings=MODEL_SETTINGS)


# -- the same scenarios as the memory store ---------------------------------------


async def test_sliding_ttl_is_renewed_by_read_and_append_not_head(
    any_store: Store, clock: FakeClock
) -> None:
    await any_store.create("s", CreateRequest(TEXT, ttl=10, messages=[b"x"]))
    clock.advance(8)
    await any_store.read("s", 0, 100)
    clock.advance(8)
    await any_store.append("s", AppendRequest([b"y"], TEXT))
    clock.advance(8)
    meta = await any_store.head("s")
    assert (meta.ttl, meta.tail) == (10, 2)
    clock.advance(2)
    with pytest.raises(errors.StreamNotFound):
        await any_store.head("s")
    with pytest.raises(errors.StreamNotFound):
        await any_store.read("s", 0, 100)


async def test_expires_at_is_absolute(any_store: Store, clock: FakeClock) -> None:
    await any_store.create("s", CreateRequest(TEXT, expires_at=clock.now + 10))
    clock.advance(9.5)
    await any_store.append("s", AppendRequest([b"x"], TEXT))
    assert (await any_store.read("s", 0, 100)).chunks == [b"x"]
    clock.advance(0.5)
    with pytest.raises(errors.StreamNotFound):
        await any_store.append("s", AppendRequest([b"y"], TEXT))
    # The path is free again, and the new stream does not see the old data.
    result = await any_store.create("s", CreateRequest(TEXT))
    assert result.created and result.meta.tail == 0
    assert (await any_store.read("s", 0, 100)).chunks == []


async def test_expired_source_with_a_fork_is_gone_while_the_fork_reads_through_it(
    any_store: Store, clock: FakeClock
) -> None:
    await any_store.create("src", CreateRequest(TEXT, ttl=10, messages=[b"abc"]))
    await any_store.create("fork", CreateRequest(None, ttl=100, fork_from="src", fork_offset=2))
    await any_store.append("fork", AppendRequest([b"XY"], TEXT))
    clock.advance(10)
    with pytest.raises(errors.StreamGone):
        await any_store.head("src")
    with pytest.raises(errors.StreamGone):
        await any_store.read("src", 0, 100)
    with pytest.raises(errors.StreamConflict, match="deleted but forks still use its path"):
        await any_store.create("src", CreateRequest(TEXT))
    with pytest.raises(errors.StreamConflict, match="cannot fork a deleted stream"):
        await any_store.create("other", CreateRequest(None, fork_from="src"))
    assert b"".join(await content(any_store, "fork")) == b"abXY"
    # The last fork going takes the soft-deleted source with it.
    await any_store.delete("fork")
    with pytest.raises(errors.StreamNotFound):
        await any_store.head("src")
    assert (await any_store.create("src", CreateRequest(TEXT))).meta.tail == 0


async def test_source_expiring_at_creation_of_a_conflicting_stream(
    any_store: Store, clock: FakeClock
) -> None:
    await any_store.create("src", CreateRequest(TEXT, ttl=5, messages=[b"abc"]))
    await any_store.create("fork", CreateRequest(None, ttl=50, fork_from="src"))
    clock.advance(5)
    with pytest.raises(errors.StreamConflict, match="expired but forks still use its path"):
        await any_store.create("src", CreateRequest(TEXT))


async def test_forks_inherit_ttl_and_deleted_source_cascades(
    any_store: Store, clock: FakeClock
) -> None:
    await any_store.create("a", CreateRequest(JSON, ttl=30, messages=[b"1", b"2"]))
    b = await any_store.create("b", CreateRequest(None, fork_from="a"))
    assert (b.meta.ttl, b.meta.content_type) == (30, JSON)
    await any_store.create("c", CreateRequest(None, fork_from="b", fork_offset=1))
    await any_store.delete("a")
    await any_store.delete("b")
    assert await content(any_store, "c") == [b"1"]
    await any_store.delete("c")
    for path in ("a", "b", "c"):
        with pytest.raises(errors.StreamNotFound):
            await any_store.head(path)


async def test_sweep_expires_due_streams_and_wakes_readers(
    any_store: Store, clock: FakeClock
) -> None:
    await any_store.create("gone", CreateRequest(TEXT, ttl=10))
    await any_store.create("soft", CreateRequest(TEXT, ttl=10, messages=[b"s"]))
    await any_store.create("fork", CreateRequest(None, ttl=1000, fork_from="soft"))
    await any_store.create("kept", CreateRequest(TEXT, ttl=100))
    follower = Follower(any_store, "gone")
    await follower.idle()
    clock.advance(10)
    sweep = getattr(any_store, "sweep")  # noqa: B009 - not part of the Store interface
    expired = sweep()
    if asyncio.iscoroutine(expired):
        expired = await expired
    assert expired == 2
    await asyncio.wait_for(follower.task, 2)
    assert follower.ended
    with pytest.raises(errors.StreamNotFound):
        await any_store.head("gone")
    with pytest.raises(errors.StreamGone):
        await any_store.head("soft")
    assert (await any_store.head("kept")).tail == 0
    assert await content(any_store, "fork") == [b"s"]


async def test_records(any_store: Store) -> None:
    assert await any_store.get_record("runs", "r1") is None
    await any_store.put_record("runs", "r2", b"\x00two")
    await any_store.put_record("runs", "r1", b"one")
    await any_store.put_record("sessions", "r1", b"other")
    await any_store.put_record("runs", "r1", b"ONE")
    assert await any_store.get_record("runs", "r1") == b"ONE"
    assert await any_store.list_records("runs") == [("r1", b"ONE"), ("r2", b"\x00two")]
    await any_store.delete_record("runs", "r1")
    await any_store.delete_record("runs", "missing")
    assert await any_store.list_records("runs") == [("r2", b"\x00two")]
    assert await any_store.list_records("nothing") == []


async def test_binary_data_and_unusual_paths(any_store: Store) -> None:
    path = "weird/päth with spaces/\n%s'\"]]--"
    data = bytes(range(256)) * 3
    await any_store.create(path, CreateRequest(BYTES, messages=[data[:100]]))
    await any_store.append(path, AppendRequest([data[100:]], BYTES))
    assert b"".join(await content(any_store, path)) == data
    assert b"".join(await content(any_store, path, 333)) == data[333:]


# -- differential: the memory store and the Redis store, side by side ------------------

PATHS = ("a", "b", "c", "d")


def _creates(forks: bool) -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.just("create"),
        st.sampled_from(PATHS),
        st.sampled_from((None, None, None, TEXT, JSON) if forks else (None, TEXT, JSON)),
        st.sampled_from((None, None, 5, 20)),
        st.sampled_from((None, None, 12.5)),
        st.sampled_from((None, *PATHS, *PATHS)) if forks else st.none(),
        st.sampled_from((None, None, 0, 1, 3)),
        st.sampled_from((0, 0, 1)),
        st.sampled_from((False, False, False, True)),
    )


_appends = st.tuples(
    st.just("append"),
    st.sampled_from(PATHS),
    st.integers(0, 3),
    st.sampled_from((False,) * 5 + (True,)),
)
_reads = st.tuples(st.just("read"), st.sampled_from(PATHS), st.sampled_from((None, 0, 1, 2, 4)))
ops = st.one_of(
    _creates(forks=True),
    _creates(forks=True),
    _appends,
    _appends,
    _reads,
    _reads,
    st.tuples(st.just("head"), st.sampled_from(PATHS)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
    st.tuples(st.just("advance"), st.sampled_from((1.0, 4.0, 6.0, 12.5))),
    st.tuples(st.just("sweep")),
)
#: Histories start with two plain creates, so that most operations meet a stream.
histories = st.tuples(
    st.lists(_creates(forks=False), min_size=2, max_size=2),
    st.lists(ops, min_size=10, max_size=40),
).map(lambda parts: parts[0] + parts[1])


def _replaces_expired_fork_of_same_source(mem: MemoryStore, path: str, source: str) -> bool:
    """The case where local.py miscounts refs (see the regression test below)."""
    old, src = mem._db.load(path), mem._db.load(source)
    if old is None or src is None or old.fork_of != src.id:
        return False
    expiry = old.expiry()
    return expiry is not None and mem._clock() >= expiry


async def _outcome(coro):  # type: ignore[no-untyped-def]
    try:
        return await coro, None
    except errors.StoreError as err:
        return None, (type(err).__name__, str(err))


def _summary(result: object) -> object:
    if isinstance(result, CreateResult):
        return (result.created, _summary(result.meta))
    if isinstance(result, StreamMeta):
        m = result
        return (m.id, m.path, m.content_type, m.created_at, m.tail, m.closed, m.ttl,
                m.expires_at, m.accessed_at, m.fork_of, m.fork_offset, m.refs)  # fmt: skip
    if isinstance(result, ReadResult):
        return (_summary(result.meta), result.start, b"".join(result.chunks), result.next,
                result.up_to_date, result.closed)  # fmt: skip
    return result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories)
def test_redis_agrees_with_memory_store_on_ttl_histories(
    redis_server: RedisServer, history: list[tuple]
) -> None:
    clock = FakeClock()
    mem = MemoryStore(clock=clock)
    red = RedisStore(redis_server.url(), prefix=f"diff-{uuid.uuid4().hex}:", clock=clock)
    counter = itertools.count()

    async def run() -> None:
        await red.open()
        try:
            for op in history:
                kind, *args = op
                if kind == "advance":
                    clock.advance(args[0])
                    continue
                if kind == "sweep":
                    assert mem.sweep() == await red.sweep()
                    continue
                if kind == "create":
                    path, ct, ttl, exp, src, offset, sub, closed = args
                    if src is not None and _replaces_expired_fork_of_same_source(mem, path, src):
                        continue
                    json = (ct or TEXT) == JSON
                    msgs = [b"%d" % next(counter)] if json else [b"xy"]
                    req = CreateRequest(
                        ct, ttl=ttl, expires_at=None if exp is None else clock.now + exp,
                        closed=closed, fork_from=src, fork_offset=offset if src else None,
                        fork_sub_offset=sub if src and offset is not None else 0, messages=msgs,
                    )  # fmt: skip
                    calls = [s.create(path, req) for s in (mem, red)]
                elif kind == "append":
                    path, n, close = args
                    meta = mem._db.load(path)
                    json = meta is not None and meta.json
                    msgs = [b"%d" % next(counter) if json else b"abc"[:i] for i in range(n)]
                    ct = JSON if json else TEXT
                    calls = [
                        s.append(path, AppendRequest(msgs, ct, close=close)) for s in (mem, red)
                    ]
                elif kind == "read":
                    calls = [s.read(args[0], args[1], 1 << 20) for s in (mem, red)]
                elif kind == "head":
                    calls = [s.head(args[0]) for s in (mem, red)]
                else:
                    calls = [s.delete(args[0]) for s in (mem, red)]
                expected, actual = [await _outcome(c) for c in calls]
                assert _summary(actual[0]) == _summary(expected[0]), op
                assert actual[1] == expected[1], op
        finally:
            await red.aclose()

    asyncio.run(run())


# -- regressions ----------------------------------------------------------------------


async def test_read_from_inside_a_row_continues_into_the_next_segment(any_store: Store) -> None:
    """A small read that starts inside a source row must not skip the rest of the source."""
    await any_store.create("a", CreateRequest(BYTES, messages=[b"0123456789"]))
    await any_store.append("a", AppendRequest([b"abcdefghij"], BYTES))
    await any_store.create("b", CreateRequest(None, fork_from="a"))
    await any_store.append("b", AppendRequest([b"XYZ"], BYTES))
    res = await any_store.read("b", 5, 8)
    assert (res.chunks, res.next, res.up_to_date) == ([b"56789", b"abcdefghij"], 20, False)
    assert b"".join(await content(any_store, "b", 5)) == b"56789abcdefghijXYZ"


async def test_empty_byte_chunks_append_nothing_but_json_messages_are_kept(
    any_store: Store,
) -> None:
    await any_store.create("b", CreateRequest(BYTES, messages=[b"", b"x", b""]))
    assert (await any_store.head("b")).tail == 1
    for _ in range(2):
        with pytest.raises(errors.BadRequest):
            await any_store.append("b", AppendRequest([b"", b""], BYTES))
    with pytest.raises(errors.StreamClosed):  # nothing to append, so it is only a close...
        await any_store.append("b", AppendRequest([b""], TEXT, close=True))
        await any_store.append("b", AppendRequest([b"y"], BYTES))
    assert b"".join(await content(any_store, "b")) == b"x"
    await any_store.create("j", CreateRequest(JSON, messages=[b"1"]))
    result = await any_store.append("j", AppendRequest([b"", b"2"], JSON))
    assert result.tail == 3


async def test_recreating_an_expired_fork_keeps_the_source_refcount_exact(
    any_store: Store, clock: FakeClock
) -> None:
    """Expiring the old fork releases its reference before the new fork takes one."""
    rstore = any_store
    await rstore.create("src", CreateRequest(TEXT, messages=[b"abc"]))
    await rstore.create("f", CreateRequest(None, ttl=10, fork_from="src"))
    clock.advance(20)
    await rstore.create("f", CreateRequest(None, fork_from="src"))
    assert (await rstore.head("src")).refs == 1
    await rstore.delete("src")
    await rstore.delete("f")
    with pytest.raises(errors.StreamNotFound):
        await rstore.head("src")


async def test_redis_sees_the_status_codes_python_defines(redis_server: RedisServer) -> None:
    """The Lua constants the scripts answer with have ``Status``'s values inside Redis."""
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        names = ", ".join(Status.__members__)
        seen = await client.eval(f"{lua_status_constants()}return {{{names}}}", 0)
    finally:
        await client.aclose()
    assert seen == [status.value for status in Status]


# -- Redis's own clock and the sweeper task ----------------------------------------------


async def test_redis_clock_and_background_sweeper(redis_server: RedisServer, prefix: str) -> None:
    store = await opened(RedisStore(redis_server.url(), prefix=prefix, sweep_interval=0.1))
    try:
        meta = (await store.create("s", CreateRequest(TEXT, ttl=1))).meta
        assert abs(meta.created_at - time.time()) < 5
        follower = Follower(store, "s")
        await follower.idle()
        # Nobody touches the stream: the sweeper expires it and wakes the reader.
        await asyncio.wait_for(follower.task, 3)
        with pytest.raises(errors.StreamNotFound):
            await store.head("s")
    finally:
        await store.aclose()


# -- replicas ------------------------------------------------------------------------


async def test_replicas_see_each_others_appends_live_within_100ms(
    replicas: list[RedisStore],
) -> None:
    a, b = replicas
    assert a.notifier is not b.notifier
    await a.create("s", CreateRequest(TEXT))
    on_a, on_b = Follower(a, "s"), Follower(b, "s")
    await on_a.idle()
    await on_b.idle()
    latencies = []
    for i in range(10):
        writer, reader = (a, on_b) if i % 2 == 0 else (b, on_a)
        reader.changed.clear()
        sent = time.monotonic()
        await writer.append("s", AppendRequest([b"%d;" % i], TEXT))
        await asyncio.wait_for(reader.changed.wait(), 1)
        latencies.append(reader.arrived[-1] - sent)
    assert max(latencies) < 0.1, latencies
    expected = b"".join(b"%d;" % i for i in range(10))
    await until(lambda: on_a.data() == expected and on_b.data() == expected)
    # Every batch came from the notification chain, in order, without gaps.
    for follower in (on_a, on_b):
        ends = [0] + [end for _, _, end in follower.batches]
        assert all(start == ends[i] for i, (start, _, _) in enumerate(follower.batches))
        await follower.close()


async def test_large_appends_reach_other_replicas_complete(
    redis_server: RedisServer, prefix: str
) -> None:
    """Appends over the inline limit travel without their data; the subscriber fetches it."""
    a = await opened(RedisStore(redis_server.url(), prefix=prefix, inline_max=16))
    b = await opened(RedisStore(redis_server.url(), prefix=prefix))
    try:
        await a.create("bytes", CreateRequest(BYTES))
        await a.create("json", CreateRequest(JSON))
        on_bytes, on_json = Follower(b, "bytes"), Follower(b, "json")
        await on_bytes.idle()
        await on_json.idle()
        big = bytes(range(256)) * 40
        messages = [b'{"n":%d}' % i for i in range(100)]
        await a.append("bytes", AppendRequest([big], BYTES))
        await a.append("bytes", AppendRequest([b"small"], BYTES))
        await a.append("json", AppendRequest(messages, JSON))
        await a.append("json", AppendRequest([b"1"], JSON, close=True))
        await until(lambda: on_bytes.data() == big + b"small")
        await asyncio.wait_for(on_json.task, 2)
        assert on_json.messages() == [*messages, b"1"]
        assert on_json.batches[0] == (0, messages, 100)
        await on_bytes.close()
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_replicas_own_appends_nobody_reads_cost_its_subscriber_no_wake_up(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every append's notification comes back to the replica that made it; with
    nobody here reading that stream it is dropped as the connection reads it, not
    handed to the subscriber's task (a wake-up per append was 15 µs of its CPU)."""
    takes = 0
    take = redis_subscriber._Inbox.take

    async def counted(self: redis_subscriber._Inbox, timeout: float) -> list[object]:
        nonlocal takes
        replies = await take(self, timeout)
        takes += bool(replies)
        return replies

    monkeypatch.setattr(redis_subscriber._Inbox, "take", counted)
    store = await opened(RedisStore(redis_server.url(), prefix=prefix))
    try:
        await store.create("s", CreateRequest(JSON))
        takes = 0
        for i in range(100):
            await store.append("s", AppendRequest([b"%d" % i], JSON))
        # Readers elsewhere are still woken: a follower here sees the next one.
        follower = Follower(store, "s", offset=100)
        await follower.idle()
        await store.append("s", AppendRequest([b"100"], JSON))
        await until(lambda: follower.messages() == [b"100"])
        await follower.close()
        assert takes == 0
    finally:
        await store.aclose()


async def test_notifications_read_while_a_large_append_is_fetched_wait_behind_it(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica publishes a stream's appends to its readers in commit order, even
    when an earlier one was too large to inline and is still being fetched."""
    fetch = Subscriber._fetch

    async def slow_fetch(self: Subscriber, sid: int, start: int, end: int) -> object:
        await asyncio.sleep(0.2)
        return await fetch(self, sid, start, end)

    monkeypatch.setattr(Subscriber, "_fetch", slow_fetch)
    a = await opened(RedisStore(redis_server.url(), prefix=prefix, inline_max=16))
    b = await opened(RedisStore(redis_server.url(), prefix=prefix))
    try:
        await a.create("s", CreateRequest(BYTES))
        published: list[tuple[int, int]] = []
        publish = b.notifier.publish

        def recorded(path: str, start: int, end: int, *args: object, **kw: object) -> None:
            published.append((start, end))
            publish(path, start, end, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(b.notifier, "publish", recorded)
        follower = Follower(b, "s")
        await follower.idle()
        big = bytes(range(256)) * 4
        await a.append("s", AppendRequest([big], BYTES))
        await asyncio.sleep(0.05)  # (b is fetching it now)
        await a.append("s", AppendRequest([b"small"], BYTES))
        await until(lambda: follower.data() == big + b"small")
        assert published == [(0, 1024), (1024, 1029)]
        await follower.close()
    finally:
        await a.aclose()
        await b.aclose()


async def test_delete_on_one_replica_ends_readers_on_the_other(
    replicas: list[RedisStore],
) -> None:
    a, b = replicas
    await a.create("s", CreateRequest(TEXT, messages=[b"x"]))
    follower = Follower(b, "s")
    await follower.idle()
    await a.delete("s")
    await asyncio.wait_for(follower.task, 1)
    assert follower.ended and follower.data() == b"x"


async def test_concurrent_producer_appends_from_two_replicas_are_exactly_once(
    replicas: list[RedisStore],
) -> None:
    a, b = replicas
    await a.create("log", CreateRequest(JSON))
    n = 60

    async def produce(store: RedisStore, pid: str) -> int:
        appended = 0
        for seq in range(n):
            req = AppendRequest([b'"%s-%d"' % (pid.encode(), seq)], JSON, None,
                                Producer(pid, 0, seq))  # fmt: skip
            result = await store.append("log", req)
            # A duplicate answers with the highest sequence accepted so far.
            assert result.producer_seq is not None and result.producer_seq >= seq
            assert result.appended == (result.producer_seq == seq) or not result.appended
            appended += result.appended
        return appended

    # Each producer retries every append through the other replica at once, as a
    # client failing over between replicas would; other producers interleave.
    counts = await asyncio.gather(
        produce(a, "p"), produce(b, "p"), produce(a, "q"), produce(b, "q"), produce(b, "r")
    )
    assert counts[0] + counts[1] == n
    assert counts[2] + counts[3] == n
    assert counts[4] == n
    messages = await content(a, "log")
    assert len(messages) == 3 * n
    for pid in ("p", "q", "r"):
        mine = [m for m in messages if m.startswith(b'"%s-' % pid.encode())]
        assert mine == [b'"%s-%d"' % (pid.encode(), seq) for seq in range(n)]


async def test_concurrent_forks_and_stream_seq_across_replicas(
    replicas: list[RedisStore],
) -> None:
    a, b = replicas
    await a.create("src", CreateRequest(TEXT, messages=[b"abc"]))
    results = await asyncio.gather(
        *[s.create("f", CreateRequest(None, fork_from="src")) for s in (a, b) * 10]
    )
    assert sum(r.created for r in results) == 1
    assert (await b.head("src")).refs == 1

    outcomes = await asyncio.gather(
        *[s.append("src", AppendRequest([b"."], TEXT, seq="0001")) for s in (a, b) * 5],
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, errors.SeqConflict) for o in outcomes if isinstance(o, Exception))


async def test_one_subscription_per_process_however_many_readers(
    redis_server: RedisServer, prefix: str
) -> None:
    a = await opened(RedisStore(redis_server.url(), prefix=prefix))
    b = await opened(RedisStore(redis_server.url(), prefix=prefix, max_connections=4))
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await a.create("s", CreateRequest(TEXT))
        before = len((await client.execute_command("CLIENT", "LIST")).splitlines())
        followers = [Follower(b, "s") for _ in range(50)]
        await until(lambda: b.notifier.watcher_count("s") == 50)
        await asyncio.sleep(0.1)
        pubsub = (await client.execute_command("CLIENT", "LIST", "TYPE", "pubsub")).splitlines()
        after = len((await client.execute_command("CLIENT", "LIST")).splitlines())
        assert len(pubsub) == 2  # a's subscriber and b's, whatever the number of readers
        # b's 50 readers did their first reads at once through b's bounded pool (its
        # subscriber and its appends hold 2 of the 4 connections), and none holds one
        # to wait.
        assert after - before <= 3
        await a.append("s", AppendRequest([b"hi"], TEXT))
        for f in followers:
            await until(lambda f=f: f.data() == b"hi")
            await f.close()
    finally:
        await client.aclose()
        await a.aclose()
        await b.aclose()


async def test_a_cancel_at_any_step_of_an_append_stops_the_appending_task(rstore: Store) -> None:
    """A run is stopped by cancelling its task, usually mid-append: no step may drop it.

    (redis-py's socket timeout wraps each send in asyncio.wait_for, which on
    Python 3.11 returns normally when the cancel lands just as the send ends.)
    """
    await rstore.create("s", CreateRequest(JSON))
    appended = 0

    async def keep_appending() -> None:
        nonlocal appended
        while True:
            await rstore.append("s", AppendRequest([b"{}"], JSON))
            appended += 1

    async def cancel(task: asyncio.Task[None]) -> bool:
        """Whether one cancel stopped ``task`` (which is stopped either way)."""
        task.cancel()
        await asyncio.wait([task], timeout=1)
        stopped = task.cancelled()
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        return stopped

    await rstore.append("s", AppendRequest([b"{}"], JSON))  # (scripts loaded, connected)
    # How many loop steps one append takes. The client's own work (pool, send,
    # parse) is in its first few dozen; the rest is waiting for the reply.
    task = asyncio.create_task(keep_appending())
    span = 0
    while appended < 1:
        await asyncio.sleep(0)
        span += 1
    lost = [] if await cancel(task) else [f"{span}+"]
    sweep = [*range(min(span, 60)), *range(60, span, max(1, span // 60))]
    for steps in sweep * 2:
        task = asyncio.create_task(keep_appending())
        for _ in range(steps):
            await asyncio.sleep(0)
        if not await cancel(task):
            lost.append(steps)
            break
    assert lost == [], f"a cancel {lost[0]} loop steps into the task was lost"


async def test_a_command_redis_does_not_answer_fails_after_the_socket_timeout(
    redis_server: RedisServer, prefix: str
) -> None:
    store = await opened(RedisStore(redis_server.url(), prefix=prefix, socket_timeout=0.3))
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await store.create("s", CreateRequest(TEXT))
        await client.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        asked = time.monotonic()
        with pytest.raises(errors.BackendUnavailable):
            await store.append("s", AppendRequest([b"lost?"], TEXT))
        assert 0.25 < time.monotonic() - asked < 1.0
        await client.execute_command("CLIENT", "UNPAUSE")
        # The connection with the unanswered command was dropped, not reused.
        await store.append("s", AppendRequest([b"after"], TEXT))
        assert b"".join(await content(store, "s")) in (b"after", b"lost?after")
    finally:
        await client.aclose()
        await store.aclose()


# -- Redis unavailable ----------------------------------------------------------------


async def test_redis_killed_and_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    store = await opened(RedisStore(server.url(), prefix="crash:"))
    try:
        await store.create("s", CreateRequest(TEXT, messages=[b"before;"]))
        follower = Follower(store, "s")
        await until(lambda: follower.data() == b"before;")
        await follower.idle()

        server.kill()
        for _ in range(3):
            with pytest.raises(errors.BackendUnavailable):
                await store.append("s", AppendRequest([b"lost;"], TEXT))
        with pytest.raises(errors.BackendUnavailable):
            await store.read("s", 0, 100)
        with pytest.raises(errors.BackendUnavailable):
            await store.head("s")
        with pytest.raises(errors.BackendUnavailable):
            await store.create("t", CreateRequest(TEXT))
        with pytest.raises(errors.BackendUnavailable):
            await store.put_record("runs", "r", b"x")
        assert not follower.ended

        await asyncio.to_thread(server.start)
        # The very first operation after Redis is back succeeds: same store object.
        result = await store.append("s", AppendRequest([b"after;"], TEXT))
        assert result.tail == len(b"before;after;")
        assert await content(store, "s") == [b"before;", b"after;"]
        # The reader that waited through the outage carries on from its offset.
        await until(lambda: follower.data() == b"before;after;", timeout=5)
        assert not follower.ended
        await follower.close()
    finally:
        await store.aclose()
        server.stop()


async def test_readers_resync_after_missing_notifications(replicas: list[RedisStore]) -> None:
    """Appends made while a subscriber is reconnecting still reach its readers."""
    a, b = replicas
    await a.create("s", CreateRequest(TEXT))
    follower = Follower(b, "s")
    await follower.idle()
    assert a._redis is not None
    # Drop every subscriber connection, then append before they can reconnect.
    await a._redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await a.append("s", AppendRequest([b"during"], TEXT))
    await until(lambda: follower.data() == b"during", timeout=5)
    await a.append("s", AppendRequest([b";after"], TEXT))
    await until(lambda: follower.data() == b"during;after", timeout=5)
    await follower.close()


async def test_subscriber_pings_and_reconnects_when_its_connection_goes_silent(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(redis_subscriber, "PUBSUB_PING_AFTER", 0.1)
    monkeypatch.setattr(redis_subscriber, "PUBSUB_DEAD_AFTER", 0.6)
    store = await opened(RedisStore(redis_server.url(), prefix=prefix))
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await store.create("s", CreateRequest(TEXT))
        follower = Follower(store, "s")
        await follower.idle()
        # Quiet but alive: the PONGs keep the subscription (no reconnection).
        await asyncio.sleep(1.5)
        assert "went silent" not in caplog.text
        # Redis stops answering anyone for a while: the subscriber gives up on its
        # connection, and once Redis answers again, resubscribes and resyncs.
        await client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        await until(lambda: "went silent" in caplog.text, timeout=3)
        await store.append("s", AppendRequest([b"back"], TEXT))
        await until(lambda: follower.data() == b"back", timeout=5)
        await follower.close()
    finally:
        await client.aclose()
        await store.aclose()


async def test_replicas_running_different_code_each_call_their_own_functions(
    redis_server: RedisServer, prefix: str
) -> None:
    """The stream operations are a Redis Functions library named after its code, so
    replicas of two versions of tether (a rolling upgrade) share Redis without
    replacing each other's functions."""
    old = await opened(RedisStore(redis_server.url(), prefix=prefix, inline_max=16))
    new = await opened(RedisStore(redis_server.url(), prefix=prefix))
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await old.create("s", CreateRequest(JSON))
        for i in range(4):
            await (old, new)[i % 2].append("s", AppendRequest([b"%d" % i], JSON))
        assert (await new.read("s", 0, 1 << 20)).chunks == [b"0", b"1", b"2", b"3"]
        libraries = {lib[1] for lib in await client.function_list("tether_*")}
        assert len(libraries) == 2
    finally:
        await client.aclose()
        await old.aclose()
        await new.aclose()


async def test_an_operation_loads_the_functions_again_when_redis_lost_them(
    rstore: RedisStore, redis_server: RedisServer
) -> None:
    """A Redis restarted without its data, or ``FUNCTION FLUSH``: the next call loads
    the library and runs (a call Redis refused as unknown ran nothing)."""
    await rstore.create("s", CreateRequest(JSON))
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await client.function_flush()
        assert (await rstore.head("s")).tail == 0
        await client.function_flush()
        await rstore.create("t", CreateRequest(JSON))
    finally:
        await client.aclose()


async def test_open_refuses_a_redis_without_functions_with_the_version_it_needs(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path, options=("--rename-command", "FUNCTION", "")) as server:
        store = RedisStore(server.url())
        with pytest.raises(errors.BackendUnavailable, match=r"needs Redis >= 7\.0"):
            await store.open()
        await store.aclose()


async def test_open_fails_fast_when_redis_is_unreachable() -> None:
    from helpers.server import find_free_port

    store = RedisStore(f"redis://127.0.0.1:{find_free_port()}/0", connect_timeout=0.5)
    with pytest.raises(errors.BackendUnavailable, match="cannot reach Redis"):
        await store.open()
    await store.aclose()


async def test_an_open_that_does_not_finish_leaves_no_subscriber_running(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether it times out waiting for its subscription or is cancelled meanwhile."""
    subscribers: list[asyncio.Task[None]] = []

    async def never_subscribed(self: Subscriber) -> None:
        subscribers.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.Event().wait()

    monkeypatch.setattr(Subscriber, "_listen_forever", never_subscribed)
    store = RedisStore(redis_server.url(), prefix=prefix, connect_timeout=0.05)
    with pytest.raises(errors.BackendUnavailable, match="cannot subscribe"):
        await store.open()
    opening = asyncio.create_task(store.open())
    await until(lambda: len(subscribers) == 2)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert [t.cancelled() for t in subscribers] == [True, True]


# -- two tether servers on one Redis, over HTTP ------------------------------------


def test_two_servers_share_streams_live_over_http(
    tether_server: ServerFactory, tmp_path: Path, redis_server: RedisServer, prefix: str
) -> None:
    url = f"{redis_server.url()}?prefix={prefix}"
    one = tether_server(tmp_path / "one", store=url)
    two = tether_server(tmp_path / "two", store=url)
    stream = "/v1/stream/chat"
    with httpx.Client(timeout=10) as http:
        assert http.put(one.base_url + stream, headers={"content-type": JSON}).status_code == 201
        assert http.put(two.base_url + stream, headers={"content-type": JSON}).status_code == 200
        seen: list[str] = []
        with http.stream("GET", f"{two.base_url}{stream}?offset=-1&live=sse") as sse:
            lines = sse.iter_lines()
            for line in lines:  # the catch-up control event ends the backlog
                if line.startswith("data:") and "upToDate" in line:
                    break
            posted = http.post(one.base_url + stream, content=b'{"n":1}',
                               headers={"content-type": JSON})  # fmt: skip
            assert posted.status_code == 204
            for line in lines:
                if line.startswith("data:"):
                    seen.append(line)
                    if "streamNextOffset" in line:
                        break
        assert seen[0] == 'data:[{"n":1}]'
        assert '"streamNextOffset":"0000000000000000_0000000000000001"' in seen[1]
        assert http.get(f"{one.base_url}{stream}?offset=-1").json() == [{"n": 1}]


def test_http_answers_503_while_redis_is_down_and_recovers(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        server = tether_server(tmp_path / "data", store=redis.url())
        stream = server.stream_url("s")
        with httpx.Client(timeout=10) as http:
            assert http.put(stream, headers={"content-type": TEXT}).status_code == 201
            redis.kill()
            down = http.post(stream, content=b"x", headers={"content-type": TEXT})
            assert down.status_code == 503
            assert down.headers["retry-after"] == "1"
            assert down.json()["error"]["code"] == "unavailable"
            assert http.get(stream, params={"offset": "-1"}).status_code == 503
            redis.start()
            up = http.post(stream, content=b"y", headers={"content-type": TEXT})
            assert up.status_code == 204
            assert http.get(stream, params={"offset": "-1"}).content == b"y"
    finally:
        redis.stop()


# -- configuration ------------------------------------------------------------------


def test_factory_parses_redis_urls(tmp_path: Path) -> None:
    store = open_store("redis://127.0.0.1:6390/2?prefix=app1:", tmp_path)
    assert isinstance(store, RedisStore)
    assert store.prefix == "app1:"
    default = open_store("redis://localhost", tmp_path)
    assert isinstance(default, RedisStore) and default.prefix == "tether:"
    secret = open_store("redis://:hunter2@localhost:6379/0", tmp_path)
    assert "hunter2" not in repr(secret)
    assert redact("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    with pytest.raises(ValueError, match="redis://HOST:PORT/DB"):
        open_store("postgres://x", tmp_path)
