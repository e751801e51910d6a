"""Sessions: their records, and their event streams folded into conversations.

A session's events live in one JSON-mode stream, ``sessions/{id}``, readable
as a plain Durable Stream. The fold of a session is rebuilt from that stream
and caught up on demand, so it is always exactly what a reader of the stream
would compute, whoever appended the events. A fold not in memory starts from
its session's last checkpoint (sessions/checkpoints.py), not from the start.

A listing reads records, not folds: what it shows of the runs (status, usage
totals, the last update) is kept on the record by the runtime, at a run's
start, pauses and end, never per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from tether.sessions.checkpoints import DEFAULT_EVERY, Checkpointer, StreamIdentity, identity
from tether.sessions.events import ACTIVE_BRANCH, IDLE, Event, event, new_id
from tether.sessions.fold import SessionFold
from tether.store.base import AppendRequest, CreateRequest, ReadResult, Store
from tether.store.errors import StreamNotFound
from tether.streams.tail import Batch, tail

RECORDS = "sessions"
JSON = "application/json"
#: Bytes per catch-up read while folding.
READ_CHUNK = 1024 * 1024
#: Folds kept in memory; others are rebuilt from their stream when next needed.
MAX_CACHED_STATES = 5000
#: Bytes the folds kept in memory may hold, by default (as ``SessionState.size`` estimates).
DEFAULT_FOLD_CACHE_BYTES = 256 * 1024 * 1024
#: A fold's size in memory, estimated from the bytes of the events folded into it:
#: measured at 0.9x (long answers) to 1.8x (short ones, where each event's id dominates).
FOLD_BYTES_PER_EVENT_BYTE = 2
#: Events are encoded with msgspec: each bytes object orjson.dumps returns keeps a
#: 4 KiB buffer, which a seed of thousands of events (held until committed and
#: read) multiplied into hundreds of megabytes.
_ENCODER = msgspec.json.Encoder()


#: Small facts about the store itself (which migrations it has had).
META = "tether"
#: Set once every stored session is filed in the listing indexes of this version
#: (the second added the lists without gateway sessions).
INDEXED = "sessions-indexed-2"
#: The title of a session created without one, until its first text message names it.
DEFAULT_TITLE = "New session"
#: The longest title taken from a message.
MAX_AUTO_TITLE = 80
#: Order keys run from this down, so that the latest update sorts first.
_LATEST = 10**16


def stream_name(session_id: str) -> str:
    return f"sessions/{session_id}"


def _index(owner: str | None, *, everything: bool, gateway: bool = True) -> str:
    """An owner's listing: archived ones too (``everything``), gateway ones too (``gateway``)."""
    base = "sessions" if everything else "sessions-live"
    return f"{base if gateway else base + '-nogateway'}:{owner or '-'}"


#: Every listing a session can be filed in, as ``_index`` keyword arguments.
_LISTINGS = [{"everything": e, "gateway": g} for e in (True, False) for g in (True, False)]


def _order_key(record: SessionRecord) -> str:
    return f"{_LATEST - int(record.updated_at * 1_000_000):016d}:{record.id}"


def title_from(parts: list[dict[str, Any]]) -> str | None:
    """A title from a message's parts: the first line of its text, shortened (None: no text)."""
    for part in parts:
        if part.get("type") == "text":
            for line in str(part.get("text", "")).splitlines():
                if line.strip():
                    line = " ".join(line.split())
                    return line if len(line) <= MAX_AUTO_TITLE else line[: MAX_AUTO_TITLE - 1] + "…"
    return None


class QuotaExceeded(Exception):
    """A key already has as many sessions or streams as it may."""


class SessionNotFound(LookupError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"session not found: {session_id}")


@dataclass(slots=True)
class SessionRecord:
    id: str
    owner: str | None
    title: str
    model: str | None
    agent: str | None
    system: str | None
    created_at: float
    updated_at: float
    archived: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The tools its runs may use: server tools' names and client tools' definitions.
    tools: list[Any] = field(default_factory=list)
    #: The session's status as of its runs' last start, pause or end (see events.STATUSES).
    status: str = IDLE
    #: Token counts of its completed answers, summed (what the snapshot's ``usage`` says).
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def gateway(self) -> bool:
        """A session the OpenAI-compatible gateway made: left out of default listings."""
        return bool(self.metadata.get("gateway"))

    def to_bytes(self) -> bytes:
        # orjson walks the dataclass in C: asdict's deep copy took 16 of 17 us.
        return orjson.dumps(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionRecord:
        return cls(**orjson.loads(raw))

    def public(self) -> dict[str, Any]:
        """The record as clients see it: the owner is a key's identity, not shown.

        A copy made by orjson: asdict's deep copy was half of a listing page's time."""
        out: dict[str, Any] = orjson.loads(self.to_bytes())
        del out["owner"]
        return out


@dataclass(slots=True)
class SessionState:
    record: SessionRecord
    #: The stream the fold is of (a checkpoint is only ever used for the same one).
    stream: StreamIdentity
    fold: SessionFold = field(default_factory=SessionFold)
    #: Stream position the fold is complete up to.
    position: int = 0
    #: Bytes of the events folded in (from the stream's start, through any checkpoint).
    folded_bytes: int = 0
    #: Position of the fold's last checkpoint written or read (0: none).
    checkpointed: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        """The fold's estimated bytes in memory."""
        return self.folded_bytes * FOLD_BYTES_PER_EVENT_BYTE


class SessionService:
    def __init__(
        self,
        store: Store,
        *,
        max_sessions: int = 0,
        fold_cache_bytes: int = DEFAULT_FOLD_CACHE_BYTES,
        checkpoint_every: int = DEFAULT_EVERY,
    ) -> None:
        """``fold_cache_bytes``: what the folds kept in memory may hold, as estimated (the
        most recently used one is kept whatever its size); ``checkpoint_every``: events
        between two checkpoints of a session's fold."""
        self.store = store
        #: Sessions one key may have (0: no limit); keyless callers are not limited.
        self.max_sessions = max_sessions
        self.fold_cache_bytes = fold_cache_bytes
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        #: The estimated bytes of the folds in ``_states``.
        self._cached_bytes = 0
        self.checkpoints = Checkpointer(store, self.state, checkpoint_every)

    async def create(
        self,
        *,
        owner: str | None,
        model: str | None,
        agent: str | None,
        system: str | None,
        title: str | None,
        metadata: dict[str, Any] | None = None,
        tools: list[Any] | None = None,
    ) -> SessionRecord:
        now = time.time()
        record = SessionRecord(
            id=new_id("ses"),
            owner=owner,
            title=title or DEFAULT_TITLE,
            model=model,
            agent=agent,
            system=system,
            created_at=now,
            updated_at=now,
            metadata=metadata or {},
            tools=tools or [],
        )
        raw = record.to_bytes()  # before any write: a record that cannot be stored leaves nothing
        if owner is not None and self.max_sessions and await self.count(owner) >= self.max_sessions:
            raise QuotaExceeded(
                f"this key has {self.max_sessions} sessions, the most it may have; "
                "delete some to make room"
            )
        created = await self.store.create(stream_name(record.id), CreateRequest(JSON))
        await self.store.put_record(RECORDS, record.id, raw)
        await self._index(record)
        # Its fold is known (the stream is empty): the first state() needs no record read.
        self._cache_state(SessionState(record, identity(created.meta)))
        return record

    async def record(self, session_id: str, owner: str | None = None) -> SessionRecord:
        """The session if it exists and ``owner`` may see it (None: no auth)."""
        raw = await self.store.get_record(RECORDS, session_id)
        if raw is None:
            raise SessionNotFound(session_id)
        record = SessionRecord.from_bytes(raw)
        if owner is not None and record.owner != owner:
            raise SessionNotFound(session_id)
        return record

    async def page(
        self,
        owner: str | None,
        *,
        archived: bool,
        limit: int,
        after: str | None = None,
        gateway: bool = False,
    ) -> tuple[list[SessionRecord], str | None]:
        """``owner``'s sessions, most recently updated first, from the cursor ``after`` on.

        Archived ones only with ``archived``, the gateway's only with ``gateway``.
        Returns the page and the cursor of the next one (None at the end). Costs
        one page, whoever else has sessions.
        """
        name = _index(owner, everything=archived, gateway=gateway)
        entries = await self.store.index_page(name, after, limit)
        raws = await self.store.get_records(RECORDS, [sid for _, sid in entries])
        records = [SessionRecord.from_bytes(raw) for raw in raws if raw is not None]
        return records, (entries[-1][0] if len(entries) == limit else None)

    async def count(self, owner: str | None) -> int:
        return await self.store.index_count(_index(owner, everything=True))

    async def save(self, record: SessionRecord) -> None:
        record.updated_at = time.time()
        await self._write(record, index=True)

    async def set_title(self, record: SessionRecord, title: str) -> None:
        """Store ``record`` with ``title``, leaving its place in the listings (and
        ``updated_at``) as they are: naming a session is not activity in it."""
        record.title = title
        await self._write(record, index=False)

    async def note_run(
        self,
        session_id: str,
        status: str,
        *,
        usage: Mapping[str, int] | None = None,
        touch: bool = False,
    ) -> None:
        """Keep what listings show of a run on the session's record.

        ``status``: the session's status now; ``usage``: token counts to add to
        its totals; ``touch``: a message was placed, so ``updated_at`` moves on
        (and the session to the top of its owner's lists). A session already
        deleted is left deleted.
        """
        raw = await self.store.get_record(RECORDS, session_id)
        if raw is None:
            return
        record = SessionRecord.from_bytes(raw)
        record.status = status
        for key, n in (usage or {}).items():
            record.usage[key] = record.usage.get(key, 0) + n
        if touch:
            record.updated_at = time.time()
        await self._write(record, index=touch)

    async def _write(self, record: SessionRecord, *, index: bool) -> None:
        """Store ``record`` (and file it in its listings, with ``index``) in one commit."""
        writes: list[Awaitable[None]] = [
            self.store.put_record(RECORDS, record.id, record.to_bytes())
        ]
        if index:
            writes += self._filings(record)
        await asyncio.gather(*writes)
        state = self._states.get(record.id)
        if state is not None:
            state.record = record

    async def delete(self, session_id: str) -> None:
        state = self._states.pop(session_id, None)
        if state is not None:
            self._cached_bytes -= state.size
        raw = await self.store.get_record(RECORDS, session_id)
        if raw is not None:
            owner = SessionRecord.from_bytes(raw).owner
            for listing in _LISTINGS:
                await self.store.index_remove(_index(owner, **listing), session_id)
        await self.store.delete_record(RECORDS, session_id)
        with contextlib.suppress(StreamNotFound):
            await self.store.delete(stream_name(session_id))
        await self.checkpoints.forget(session_id)

    async def aclose(self) -> None:
        """Finish the checkpoint writes under way (before the store closes)."""
        await self.checkpoints.aclose()

    async def _index(self, record: SessionRecord) -> None:
        await asyncio.gather(*self._filings(record))

    def _filings(self, record: SessionRecord) -> list[Awaitable[None]]:
        """The writes that file the session under its owner, in each listing it belongs to:
        all of them, or without the archived ones, or without the gateway's, or neither."""
        key = _order_key(record)
        writes: list[Awaitable[None]] = []
        for listing in _LISTINGS:
            name = _index(record.owner, **listing)
            if (record.archived and not listing["everything"]) or (
                record.gateway and not listing["gateway"]
            ):
                writes.append(self.store.index_remove(name, record.id))
            else:
                writes.append(self.store.index_put(name, record.id, key))
        return writes

    async def build_indexes(self) -> None:
        """File sessions stored before listings were indexed (once per store)."""
        if await self.store.get_record(META, INDEXED) is not None:
            return
        for _, raw in await self.store.list_records(RECORDS):
            await self._index(SessionRecord.from_bytes(raw))
        await self.store.put_record(META, INDEXED, b"1")

    async def state(self, session_id: str) -> SessionState:
        """The session's fold, caught up with everything in its stream."""
        state = self._states.get(session_id)
        if state is None:
            state = self._cache_state(await self._restore(await self.record(session_id)))
        else:
            self._states.move_to_end(session_id)
        async with state.lock:
            name = stream_name(session_id)
            if (await self.store.head(name)).tail == state.position:
                return state  # nothing new: a head is cheaper than an empty read
            folded = 0
            while True:
                res = await self.store.read(name, state.position, READ_CHUNK)
                for chunk in res.chunks:
                    state.fold.apply(orjson.loads(chunk))
                    folded += len(chunk)
                state.position = res.next
                if res.up_to_date:
                    break
            self._grew(state, folded)
        self.checkpoints.grew(session_id, state, state.position)
        return state

    async def _restore(self, record: SessionRecord) -> SessionState:
        """The session's fold as its last checkpoint has it (else empty): not yet caught up."""
        meta = await self.store.head(stream_name(record.id))
        checkpoint = await self.checkpoints.read(record.id, meta)
        if checkpoint is None:
            return SessionState(record, identity(meta))
        position = checkpoint.position
        return SessionState(
            record, identity(meta), checkpoint.fold, position, checkpoint.folded_bytes, position
        )

    def _cache_state(self, state: SessionState) -> SessionState:
        """Keep ``state`` (or the one another task cached first), evicting the oldest."""
        kept = self._states.setdefault(state.record.id, state)
        if kept is state:
            self._cached_bytes += state.size
            self._evict()
        return kept

    def _grew(self, state: SessionState, folded: int) -> None:
        """``folded`` more bytes of events went into ``state``: it takes more memory."""
        before = state.size
        state.folded_bytes += folded
        if self._states.get(state.record.id) is state:
            self._cached_bytes += state.size - before
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used folds until the cache is within its bounds."""
        states = self._states
        while len(states) > 1 and (
            len(states) > MAX_CACHED_STATES or self._cached_bytes > self.fold_cache_bytes
        ):
            _, old = states.popitem(last=False)
            self._cached_bytes -= old.size

    async def append(
        self, session_id: str, events: list[Event], *, lease: tuple[str, str] | None = None
    ) -> int:
        """Append events as one atomic batch; returns the stream position after them.

        With ``lease``, only while that lease is held (else LeaseLost).
        """
        encode = _ENCODER.encode
        result = await self.store.append(
            stream_name(session_id),
            AppendRequest([encode(e) for e in events], JSON, lease=lease),
        )
        self.grew(session_id, result.tail)
        return result.tail

    def grew(self, session_id: str, position: int) -> None:
        """The session's stream reached ``position`` (appended here, or by a worker through
        the server): its fold is checkpointed in the background, never awaited here."""
        self.checkpoints.grew(session_id, self._states.get(session_id), position)

    async def select_branch(self, session_id: str, message_id: str) -> bool:
        """Make the branch ending at ``message_id`` the session's current one, for every
        reader (an ``active-branch`` event); False if the session has no such message."""
        state = await self.state(session_id)
        if message_id not in state.fold.messages:
            return False
        if state.fold.leaf != message_id:
            await self.append(session_id, [event(ACTIVE_BRANCH, message_id=message_id)])
        return True

    # -- stream access: what the fronts read ---------------------------------------

    async def end_position(self, session_id: str) -> int:
        """The position after the session's last event (where a new reader goes live)."""
        return (await self.store.head(stream_name(session_id))).tail

    def follow(
        self,
        session_id: str,
        position: int,
        *,
        stop: asyncio.Future[None] | None = None,
        leave: asyncio.Future[None] | None = None,
    ) -> AsyncIterator[Batch | None]:
        """The session's events from ``position`` on, as :func:`~tether.streams.tail.tail` reads."""
        return tail(self.store, stream_name(session_id), position, stop=stop, leave=leave)

    async def read_events(self, session_id: str, position: int, max_bytes: int) -> ReadResult:
        """One read of the session's stream: raw events from ``position``, up to ``max_bytes``."""
        return await self.store.read(stream_name(session_id), position, max_bytes)

    async def get_extra(self, namespace: str, key: str) -> bytes | None:
        """A record a front keeps beside the sessions (in its own ``namespace``), or None."""
        return await self.store.get_record(namespace, key)

    async def put_extra(self, namespace: str, key: str, value: bytes) -> None:
        """Store a front's record ``key`` in ``namespace`` (see :meth:`get_extra`)."""
        await self.store.put_record(namespace, key, value)
