"""The store agrees with a small reference model on every answer, for any history.

Hypothesis generates random histories: create (byte or JSON stream, optionally
closed, optionally with initial data), append (plain, with Stream-Seq, with an
idempotent producer moving to its next sequence number, repeating one, skipping
ahead, bumping or going back an epoch; sometimes sent twice, as a client retries
after a lost answer), close, fork (at any offset and
sub-offset, forks of forks), delete (soft while forks read through a stream,
cascading when the last fork goes) and reads from any offset with a small
``max_bytes``, following ``next`` until up to date. Every history starts with
a stream "a" that holds a few appends and a fork "b" of it made among them.

The model keeps every stream as a plain list with one element per position (a
single byte for byte streams, one message for JSON streams) and copies a fork's
prefix when the fork is made, which is right because positions below a fork
point never change. After every step the store and the model must agree on the
outcome (the error class and its details, or the result's fields) and on what
HEAD says about every path; reads must return exactly the model's content from
the offset read. At the end of each history every live stream is read from
every offset.

Where a request breaks several rules at once, the model checks them in the
store's order: existence, content type, producer (a recognised duplicate wins
over everything after it), closed, Stream-Seq, empty body.

``StoreVersusModel`` runs the same checks as a Hypothesis state machine, for the
tests of other backends. Histories the model found bugs with are kept at the end
as named examples.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tether.store import errors
from tether.store.base import (
    AppendRequest,
    AppendResult,
    CreateRequest,
    Producer,
    ReadResult,
    Store,
    media_type,
)
from tether.store.local import LocalStore
from tether.store.memory import MemoryStore
from tether.store.sqlite import SqliteStore

from .conftest import BACKENDS

T = TypeVar("T")

PATHS = ("a", "b", "c")
BYTES = "application/octet-stream"
TEXT = "text/plain"
JSON = "application/json"
CONTENT_TYPES = (BYTES, TEXT, JSON, "application/json; charset=utf-8")
PRODUCER_IDS = ("p", "q")
#: ``max_bytes`` of the exhaustive reads at the end of every history.
FINAL_READ_SIZES = (2, 5, 1000)

MODEL_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=20,  # for StoreVersusModel, the state-machine form
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- the reference model ------------------------------------------------------


@dataclass(eq=False)
class ModelStream:
    path: str
    content_type: str
    #: One element per position: a single byte, or one serialized JSON message.
    units: list[bytes]
    #: [start, end) of every append (or initial data), as this stream sees it.
    batches: list[tuple[int, int]]
    source: ModelStream | None = None
    fork_offset: int = 0
    closed: bool = False
    last_seq: str | None = None
    producers: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Soft-deleted: forks still read through it, its path answers "gone".
    deleted: bool = False

    @property
    def json(self) -> bool:
        return media_type(self.content_type) == JSON

    @property
    def tail(self) -> int:
        return len(self.units)

    def add(self, messages: list[bytes]) -> None:
        if self.json:
            new = list(messages)
        else:
            data = b"".join(messages)
            new = [data[i : i + 1] for i in range(len(data))]
        if new:
            self.batches.append((self.tail, self.tail + len(new)))
            self.units.extend(new)


class Model:
    def __init__(self) -> None:
        #: Path -> the stream that holds it (live or soft-deleted).
        self.streams: dict[str, ModelStream] = {}

    def live(self, path: str) -> ModelStream:
        s = self.streams.get(path)
        if s is None:
            raise errors.StreamNotFound(path)
        if s.deleted:
            raise errors.StreamGone(path)
        return s

    def forks(self, s: ModelStream) -> list[ModelStream]:
        return [f for f in self.streams.values() if f.source is s]

    def create(self, path: str, req: CreateRequest) -> tuple[bool, ModelStream]:
        source: ModelStream | None = None
        start = 0
        if req.fork_from is not None:
            try:
                source = self.live(req.fork_from)
            except errors.StreamGone:
                raise errors.StreamConflict("cannot fork a deleted stream") from None
            offset = source.tail if req.fork_offset is None else req.fork_offset
            if offset > source.tail:
                raise errors.BadRequest("fork offset beyond the tail")
            sub = req.fork_sub_offset
            if sub:
                batch = next(((a, b) for a, b in source.batches if a <= offset < b), None)
                if batch is None or offset + sub > batch[1]:
                    raise errors.BadRequest("sub-offset past the end of its append")
            start = offset + sub
        content_type = req.content_type or (source.content_type if source else BYTES)
        if source is not None and media_type(content_type) != media_type(source.content_type):
            raise errors.StreamConflict("a fork must have its source's content type")

        # Creating what exists is fine if the configuration matches: content type and,
        # for a fork, its source and offset (not closure or initial data).
        existing = self.streams.get(path)
        if existing is not None:
            if existing.deleted:
                raise errors.StreamConflict("path still reserved by a deleted stream")
            same = media_type(existing.content_type) == media_type(content_type) and (
                source is None
                or (
                    existing.source is source
                    and (req.fork_offset is None or existing.fork_offset == start)
                )
            )
            if not same:
                raise errors.StreamConflict("exists with another configuration")
            return False, existing

        s = ModelStream(
            path=path,
            content_type=content_type,
            units=source.units[:start] if source else [],
            batches=[(a, min(b, start)) for a, b in source.batches if a < start] if source else [],
            source=source,
            fork_offset=start,
            closed=req.closed,
        )
        s.add(req.messages)
        self.streams[path] = s
        return True, s

    def append(self, path: str, req: AppendRequest) -> AppendResult:
        s = self.live(path)
        if (
            req.messages
            and req.content_type is not None
            and media_type(req.content_type) != media_type(s.content_type)
        ):
            raise errors.ContentTypeMismatch("content type differs")
        p = req.producer
        if p is not None:
            state = s.producers.get(p.id)
            if state is None:
                if p.seq != 0:
                    raise errors.SequenceGap(0, p.seq)
            else:
                epoch, last = state
                if p.epoch < epoch:
                    raise errors.StaleEpoch(epoch)
                if p.epoch == epoch and p.seq <= last:
                    return AppendResult(s.tail, s.closed, False, epoch, last)
                if p.epoch > epoch and p.seq != 0:
                    raise errors.BadRequest("a new epoch starts at 0")
                if p.epoch == epoch and p.seq != last + 1:
                    raise errors.SequenceGap(last + 1, p.seq)
        if s.closed:
            if not req.messages and p is None:
                return AppendResult(s.tail, True)
            raise errors.StreamClosed(path, s.tail)
        if req.seq is not None and s.last_seq is not None and req.seq <= s.last_seq:
            raise errors.SeqConflict("Stream-Seq did not increase")
        if not req.messages and not req.close:
            raise errors.BadRequest("empty append")
        s.add(req.messages)
        s.closed = s.closed or req.close
        if req.seq is not None:
            s.last_seq = req.seq
        if p is not None:
            s.producers[p.id] = (p.epoch, p.seq)
        return AppendResult(s.tail, s.closed, True, p.epoch if p else None, p.seq if p else None)

    def read(self, path: str, offset: int | None) -> ModelStream:
        s = self.live(path)
        if offset is not None and offset > s.tail:
            raise errors.BadRequest("offset beyond the tail")
        return s

    def delete(self, path: str) -> None:
        s = self.live(path)
        if self.forks(s):
            s.deleted = True
            return
        del self.streams[s.path]
        # The last fork of a soft-deleted stream takes it along, up the chain.
        while (src := s.source) is not None and src.deleted and not self.forks(src):
            del self.streams[src.path]
            s = src


# -- operations: what a history is made of -------------------------------------
#
# Operations hold raw choices that do not depend on the state (so that histories
# shrink well); ``Checker`` turns them into requests against the current state.


class ShortRepr:
    """Show only the fields that differ from their defaults, to keep histories legible."""

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.default is MISSING or getattr(self, f.name) != f.default
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class Create(ShortRepr):
    path: str
    content_type: str | None
    #: Raw payloads; a JSON stream gets each as one JSON string message.
    messages: tuple[bytes, ...] = ()
    closed: bool = False


@dataclass(frozen=True, repr=False)
class Fork(ShortRepr):
    path: str
    source: str
    #: Fork offset modulo (source tail + 2), so it can be one past the end; None: the tail.
    at: int | None = None
    #: Sub-offset: 0, else 1 .. (room left in the append it points into) + 1.
    sub: int = 0
    #: "inherit" (None), "same" (the source's), or a content type.
    content_type: str = "inherit"
    messages: tuple[bytes, ...] = ()
    closed: bool = False


@dataclass(frozen=True, repr=False)
class ProducerMove(ShortRepr):
    id: str
    #: next, duplicate, gap, bump, bad-bump (new epoch not at 0) or stale.
    move: str
    #: Epoch of a new producer; which duplicate; size of a gap.
    n: int = 0


@dataclass(frozen=True, repr=False)
class Append(ShortRepr):
    path: str
    #: Raw payloads; empty means close-only (with ``close``) or an invalid empty append.
    messages: tuple[bytes, ...]
    close: bool = False
    #: "own", "own+params" (same media type, other parameters), "none", or a content type.
    content_type: str = "own"
    #: Stream-Seq; "+" means one greater than the stream's last.
    seq: str | None = None
    producer: ProducerMove | None = None
    #: Send the identical request again, as a client retrying after a lost answer.
    retry: bool = False


@dataclass(frozen=True, repr=False)
class Delete(ShortRepr):
    path: str


@dataclass(frozen=True, repr=False)
class Read(ShortRepr):
    path: str
    #: Offset modulo (tail + 2), so it can be one past the end; None reads from the tail.
    at: int | None
    max_bytes: int


Op = Create | Fork | Append | Delete | Read

rarely = st.sampled_from((False, False, False, True))
paths = st.sampled_from(PATHS)
#: Appends go to "a" more often, so that producers and Stream-Seq meet their past.
append_paths = st.sampled_from((*PATHS, PATHS[0]))
payloads = st.lists(st.binary(min_size=1, max_size=6), max_size=3).map(tuple)
some_payloads = st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=3).map(tuple)
positions = st.none() | st.integers(0, 63) | st.integers(0, 63)

creates = st.builds(Create, paths, st.sampled_from((None, *CONTENT_TYPES)), payloads, closed=rarely)
forks = st.builds(
    Fork,
    paths,
    paths,
    at=positions,
    sub=st.just(0) | st.just(0) | st.integers(1, 8),
    content_type=st.sampled_from(("inherit", "inherit", "same", "same", TEXT, JSON)),
    messages=payloads,
    closed=rarely,
)
producer_moves = st.builds(
    ProducerMove,
    st.sampled_from((*PRODUCER_IDS, PRODUCER_IDS[0])),
    st.sampled_from(("next", "next", "next", "duplicate", "gap", "bump", "bad-bump", "stale")),
    st.integers(0, 3),
)
appends = st.builds(
    Append,
    append_paths,
    some_payloads | some_payloads | some_payloads | st.just(()),
    close=rarely,
    content_type=st.sampled_from(("own", "own", "own", "own+params", "none", TEXT)),
    seq=st.none() | st.none() | st.just("+") | st.text("abc", min_size=1, max_size=2),
    producer=st.none() | producer_moves,
    retry=rarely,
)
deletes = st.builds(Delete, paths)
reads = st.builds(Read, paths, positions, st.integers(1, 8))
ops = st.one_of(creates, forks, appends, appends, appends, deletes, reads)


seed_appends = st.builds(Append, st.just("a"), some_payloads, producer=st.none() | producer_moves)


@st.composite
def seeds(draw: st.DrawFn) -> list[Op]:
    """Stream "a" with a few appends, and a fork "b" of it made among them."""
    content_type = draw(st.sampled_from((BYTES, JSON)))
    seed: list[Op] = [Create("a", content_type, draw(payloads))]
    seed += draw(st.lists(seed_appends, min_size=1, max_size=3))
    seed.append(Fork("b", "a", at=draw(st.integers(0, 63))))
    after = draw(st.lists(st.tuples(st.sampled_from("ab"), some_payloads), max_size=3))
    seed += [Append(path, m) for path, m in after]
    return seed


#: The seed, then random operations. (A list of lists makes longer histories likely
#: while still letting a failing one shrink to nothing but the seed.)
histories = st.tuples(seeds(), st.lists(st.lists(ops, max_size=10), max_size=4)).map(
    lambda t: [*t[0], *(op for group in t[1] for op in group)]
)


# -- running a history against the store and the model ------------------------

Outcome = tuple[T | None, errors.StoreError | None]


def expect(fn: Callable[..., T], *args: Any) -> Outcome[T]:
    try:
        return fn(*args), None
    except errors.StoreError as err:
        return None, err


def assert_same_error(actual: errors.StoreError | None, expected: errors.StoreError | None) -> None:
    assert type(actual) is type(expected), f"store: {actual!r}, model: {expected!r}"
    for attr in ("current_epoch", "expected", "received", "tail"):
        assert getattr(actual, attr, None) == getattr(expected, attr, None), attr


def position(at: int | None, tail: int) -> int | None:
    return None if at is None else at % (tail + 2)


class Checker:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.model = Model()

    async def outcome(self, coro: Any) -> Outcome[Any]:
        try:
            return await coro, None
        except errors.StoreError as err:
            return None, err

    async def run(self, history: list[Op], final_reads: bool = True) -> None:
        for i, op in enumerate(history):
            try:
                await self.step(op)
                await self.check_heads()
            except AssertionError as err:
                err.add_note(f"at step {i}: {op!r}")
                raise
        if final_reads:
            await self.check_every_read()

    async def step(self, op: Op) -> None:
        match op:
            case Create():
                json = media_type(op.content_type or BYTES) == JSON
                messages = encode(op.messages, json)
                await self.check_create(
                    op.path, CreateRequest(op.content_type, closed=op.closed, messages=messages)
                )
            case Fork():
                await self.fork(op)
            case Append():
                await self.append(op)
            case Delete():
                _, expected_err = expect(self.model.delete, op.path)
                _, err = await self.outcome(self.store.delete(op.path))
                assert_same_error(err, expected_err)
            case Read():
                s = self.model.streams.get(op.path)
                await self.check_read(op.path, position(op.at, s.tail if s else 0), op.max_bytes)

    # -- create and fork --------------------------------------------------------

    async def check_create(self, path: str, req: CreateRequest) -> None:
        expected, expected_err = expect(self.model.create, path, req)
        actual, err = await self.outcome(self.store.create(path, req))
        assert_same_error(err, expected_err)
        if expected is None or actual is None:
            return
        created, s = expected
        assert actual.created == created
        assert actual.meta.content_type == s.content_type
        assert actual.meta.tail == s.tail
        assert actual.meta.closed == s.closed

    async def fork(self, op: Fork) -> None:
        src = self.model.streams.get(op.source)
        offset = position(op.at, src.tail if src else 0)
        sub = 0
        if op.sub and offset is not None:
            batch = next(((a, b) for a, b in src.batches if a <= offset < b), None) if src else None
            room = batch[1] - offset if batch else 0
            sub = 1 + (op.sub - 1) % (room + 1)
        src_type = src.content_type if src else BYTES
        content_type = {"inherit": None, "same": src_type}.get(op.content_type, op.content_type)
        json = media_type(content_type or src_type) == JSON
        req = CreateRequest(
            content_type,
            closed=op.closed,
            fork_from=op.source,
            fork_offset=offset,
            fork_sub_offset=sub,
            messages=encode(op.messages, json),
        )
        await self.check_create(op.path, req)

    # -- append and close -------------------------------------------------------

    async def append(self, op: Append) -> None:
        s = self.model.streams.get(op.path)
        own = s.content_type if s else BYTES
        messages = encode(op.messages, media_type(own) == JSON)
        content_type = None
        if messages:
            content_type = {
                "own": own,
                "own+params": media_type(own) if ";" in own else own + "; charset=utf-8",
                "none": None,
            }.get(op.content_type, op.content_type)
        seq = op.seq
        if seq == "+":
            seq = (s.last_seq if s and s.last_seq else "") + "b"
        producer = None if op.producer is None else producer_for(op.producer, s)
        req = AppendRequest(messages, content_type, seq, producer, op.close)
        for _ in range(2 if op.retry else 1):
            expected, expected_err = expect(self.model.append, op.path, req)
            actual, err = await self.outcome(self.store.append(op.path, req))
            assert_same_error(err, expected_err)
            assert actual == expected

    # -- reads ------------------------------------------------------------------

    async def read_until_up_to_date(
        self, path: str, offset: int | None, max_bytes: int, limit: int
    ) -> list[ReadResult]:
        """Read from ``offset``, then from each ``next``, until up to date (or ``limit`` reads)."""
        pages = [await self.store.read(path, offset, max_bytes)]
        while not pages[-1].up_to_date and len(pages) < limit:
            pages.append(await self.store.read(path, pages[-1].next, max_bytes))
        return pages

    async def check_read(self, path: str, offset: int | None, max_bytes: int) -> None:
        m, expected_err = expect(self.model.read, path, offset)
        limit = (m.tail - (offset or 0) + 2) if m else 1
        pages, err = await self.outcome(self.read_until_up_to_date(path, offset, max_bytes, limit))
        assert_same_error(err, expected_err)
        if m is None or pages is None:
            return
        if offset is None:
            [res] = pages
            assert (res.start, res.next, res.chunks) == (m.tail, m.tail, [])
            assert res.up_to_date
            assert res.closed == m.closed
            return

        pos = offset
        for res in pages:
            assert res.start == pos
            assert pos <= res.next <= m.tail
            assert res.up_to_date == (res.next == m.tail)
            assert res.closed == (res.up_to_date and m.closed)
            # A read stops once it has max_bytes: only its last chunk may cross the limit.
            assert sum(len(c) for c in res.chunks[:-1]) < max_bytes
            if not res.up_to_date:
                assert res.next > pos, "a read that is not up to date must make progress"
            pos = res.next
        assert pages[-1].up_to_date, "following next never reached the tail"

        chunks = [c for res in pages for c in res.chunks]
        want = m.units[offset:]
        where = f"{path!r} from {offset} with max_bytes={max_bytes}"
        if m.json:
            assert chunks == want, f"JSON read of {where}: one chunk per message"
        else:
            assert b"".join(chunks) == b"".join(want), f"byte read of {where}"

    async def check_every_read(self) -> None:
        """Every live stream, read from every position, in small and large pieces."""
        for path, s in self.model.streams.items():
            if not s.deleted:
                for offset in [None, *range(s.tail + 1)]:
                    for max_bytes in FINAL_READ_SIZES:
                        await self.check_read(path, offset, max_bytes)

    async def check_heads(self) -> None:
        for path in PATHS:
            expected, expected_err = expect(self.model.live, path)
            actual, err = await self.outcome(self.store.head(path))
            assert_same_error(err, expected_err)
            if expected is not None and actual is not None:
                assert actual.tail == expected.tail
                assert actual.closed == expected.closed
                assert actual.content_type == expected.content_type
                assert actual.json == expected.json


def encode(payloads: tuple[bytes, ...], json: bool) -> list[bytes]:
    """Raw payloads as a byte stream's chunks, or as one JSON string message each."""
    if json:
        return [b'"%s"' % p.hex().encode() for p in payloads]
    return list(payloads)


def producer_for(move: ProducerMove, s: ModelStream | None) -> Producer:
    state = s.producers.get(move.id) if s else None
    if state is None:
        return Producer(move.id, move.n % 3, 1 if move.move == "gap" else 0)
    epoch, last = state
    match move.move:
        case "duplicate":
            return Producer(move.id, epoch, move.n % (last + 1))
        case "gap":
            return Producer(move.id, epoch, last + 2 + move.n % 2)
        case "bump":
            return Producer(move.id, epoch + 1, 0)
        case "bad-bump":
            return Producer(move.id, epoch + 1, 1)
        case "stale" if epoch > 0:
            return Producer(move.id, epoch - 1, 0)
    return Producer(move.id, epoch, last + 1)


class StoreVersusModel(RuleBasedStateMachine):
    """The same checks as a Hypothesis state machine, for other backends' tests:
    ``run_state_machine_as_test(lambda: StoreVersusModel(make_store))``."""

    def __init__(self, make_store: Callable[[], Store]) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = make_store()
        self.checker = Checker(self.store)
        self.loop.run_until_complete(self.store.open())

    @initialize(seed=seeds())
    def seed(self, seed: list[Op]) -> None:
        self.loop.run_until_complete(self.checker.run(seed, final_reads=False))

    @rule(op=ops)
    def step(self, op: Op) -> None:
        self.loop.run_until_complete(self.checker.run([op], final_reads=False))

    @rule()
    def read_every_stream_from_every_offset(self) -> None:
        self.loop.run_until_complete(self.checker.check_every_read())

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.store.aclose())
        finally:
            self.loop.close()


def open_store(backend: str, tmp_path: Path) -> LocalStore:
    if backend == "memory":
        return MemoryStore()
    return SqliteStore(Path(tempfile.mkdtemp(dir=tmp_path)) / "tether.db")


@pytest.mark.parametrize("backend", BACKENDS)
@MODEL_SETTINGS
@given(history=histories)
def test_store_agrees_with_reference_model(backend: str, tmp_path: Path, history: list[Op]) -> None:
    store = open_store(backend, tmp_path)

    async def main() -> None:
        await store.open()
        try:
            await Checker(store).run(history)
        finally:
            await store.aclose()

    asyncio.run(main())


# -- named examples -------------------------------------------------------------


async def test_a_fork_read_from_inside_a_source_chunk_skips_nothing(store: LocalStore) -> None:
    """Found by the model: reading a fork from the middle of a source chunk, with a
    ``max_bytes`` between what is left of that chunk and its full size, must not jump
    over the rest of the source's part to the fork's own data."""
    await store.create("src", CreateRequest(BYTES, messages=[b"0123456789"]))
    await store.append("src", AppendRequest([b"abcdefghij"], BYTES))
    await store.create("fork", CreateRequest(None, fork_from="src", fork_offset=15))
    await store.append("fork", AppendRequest([b"XYZ"], BYTES))

    res = await store.read("fork", 8, 5)
    got, pos = list(res.chunks), res.next
    while not res.up_to_date:
        res = await store.read("fork", pos, 5)
        got, pos = got + res.chunks, res.next
    assert b"".join(got) == b"89abcdeXYZ"


async def test_an_append_of_only_empty_byte_chunks_is_refused_as_empty(
    store: LocalStore,
) -> None:
    """An empty body appends nothing, as over HTTP; it must not become a zero-length
    row (which the SQLite backend cannot store twice at one position)."""
    await store.create("s", CreateRequest(BYTES))
    for _ in range(2):
        with pytest.raises(errors.BadRequest):
            await store.append("s", AppendRequest([b""], BYTES))
    assert (await store.append("s", AppendRequest([b"x"], BYTES))).tail == 1
    res = await store.read("s", 0, 100)
    assert (res.chunks, res.next) == ([b"x"], 1)
