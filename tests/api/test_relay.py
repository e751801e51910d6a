"""The relay: a session's events, translated by a front, written as an event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from tether.api.relay import EventStreamResponse, Follow
from tether.sessions import events as ev
from tether.sessions.service import SessionService
from tether.store.memory import MemoryStore


class Numbered:
    """Writes each event's type with its position; finished after ``until`` events."""

    def __init__(self, until: int | None = None) -> None:
        self.until = until
        self.seen = 0

    @property
    def finished(self) -> bool:
        return self.until is not None and self.seen >= self.until

    def frame(self, position: int, event: bytes) -> bytes:
        self.seen += 1
        return b"%d " % position + event[:1]

    def last(self) -> bytes:
        return b"end"


@pytest.fixture
async def sessions() -> AsyncIterator[SessionService]:
    store = MemoryStore()
    await store.open()
    try:
        yield SessionService(store)
    finally:
        await store.aclose()


async def new_session(sessions: SessionService, events: int) -> str:
    record = await sessions.create(owner=None, model=None, agent=None, system=None, title=None)
    if events:
        await sessions.append(record.id, [ev.event(ev.RETRY) for _ in range(events)])
    return record.id


async def test_a_follow_translates_each_event_with_its_position_after_it(
    sessions: SessionService,
) -> None:
    sid = await new_session(sessions, 3)
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    follow = Follow(sessions, sid, 0, Numbered(until=3), stop=stop)
    batches = [b async for b in follow.frames]
    assert batches == [[b"1 {", b"2 {", b"3 {", b"end"]]


async def test_events_up_to_after_only_bring_the_translator_up_to_date(
    sessions: SessionService,
) -> None:
    sid = await new_session(sessions, 4)
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    translator = Numbered(until=4)
    follow = Follow(sessions, sid, 0, translator, stop=stop, after=2)
    batches = [b async for b in follow.frames]
    assert batches == [[b"3 {", b"4 {", b"end"]]  # the end is written whatever ``after`` is
    assert translator.seen == 4


async def test_a_reader_whose_client_left_stops_at_once_and_calls_on_end(
    sessions: SessionService,
) -> None:
    sid = await new_session(sessions, 1)
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ended: list[bool] = []
    follow = Follow(sessions, sid, 0, Numbered(), stop=stop, on_end=lambda: ended.append(True))
    assert await anext(follow.frames) == [b"1 {"]
    reading = asyncio.ensure_future(anext(follow.frames, "over"))
    await asyncio.sleep(0.01)
    assert not reading.done()  # the session is quiet: the reader waits
    follow.leave.set_result(None)
    assert await asyncio.wait_for(reading, 1) == "over"  # not after the 15 s keep-alive
    assert ended == [True]


async def test_the_servers_stop_ends_every_reader(sessions: SessionService) -> None:
    sid = await new_session(sessions, 0)
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    follow = Follow(sessions, sid, 0, Numbered(), stop=stop)
    reading = asyncio.ensure_future(anext(follow.frames, "over"))
    await asyncio.sleep(0.01)
    stop.set_result(None)
    assert await asyncio.wait_for(reading, 1) == "over"


class FakeFollow:
    """A Follow's face over a plain generator of frames."""

    def __init__(self, frames: AsyncGenerator[list[bytes] | None, None]) -> None:
        self.frames = frames
        self.leave: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def aclose(self) -> None:
        await self.frames.aclose()


async def test_an_event_stream_stops_reading_its_body_once_the_client_is_gone() -> None:
    produced: list[int] = []
    closed = asyncio.Event()

    async def body() -> AsyncGenerator[list[bytes] | None, None]:
        try:
            for i in range(1000):
                produced.append(i)
                yield [b"data: %d\n\n" % i]
                await asyncio.sleep(0.005)
        finally:
            closed.set()

    sent: list[dict[str, Any]] = []
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 3:  # the head and two chunks, then the client leaves
            left.set()

    follow = FakeFollow(body())
    response = EventStreamResponse(follow, {"x-tether-session-id": "ses_1"})  # type: ignore[arg-type]
    await asyncio.wait_for(response({"type": "http"}, receive, send), 2)
    assert closed.is_set()
    assert follow.leave.done()  # a reader sleeping in the session is woken
    assert len(produced) < 10
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    assert all(m.get("more_body") for m in sent[1:])  # no end was written to a gone client


async def test_an_event_stream_writes_its_head_then_frames_with_keep_alives() -> None:
    async def body() -> AsyncGenerator[list[bytes] | None, None]:
        yield [b"a", b"b"]
        yield None
        yield [b"c"]

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    response = EventStreamResponse(FakeFollow(body()), {}, head=b"retry: 1000\n\n")  # type: ignore[arg-type]
    await asyncio.wait_for(response({"type": "http"}, receive, send), 2)
    bodies = [m["body"] for m in sent[1:]]
    assert bodies == [b"retry: 1000\n\n", b"ab", b": keep-alive\n\n", b"c", b""]
    assert (b"cache-control", b"no-cache") in sent[0]["headers"]
