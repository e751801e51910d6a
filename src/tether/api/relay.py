"""One relay from a session's events to every front.

Each front (the native SSE route and WebSocket, the OpenAI-compatible gateway,
the AI SDK routes, the client channel's /interact) reads a session the same
way: follow its stream from a position until a stop, turn each event into what
the front writes, and write that as it comes, with keep-alives while the
session is quiet. The relay does the following (:class:`Follow`) and the
writing (:class:`EventStreamResponse`); a front brings a :class:`Translator`,
so a new front is a request parser plus a translator.

A reader stops when its translator has written its last frame, when the
session's stream ends, when the server stops, or when its client leaves (the
response resolves :attr:`Follow.leave`, which wakes the reader at once rather
than at its next keep-alive).

A reader given a send buffer is cut off once more than that many bytes of the
session wait for its client (:class:`~tether.streams.tail.Backlog`): the
task writing it is cancelled wherever it waits, it ends with the reason and
the offset to resume from, and holds nothing of the session from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tether.observability import metrics
from tether.sessions.service import SessionService, stream_name
from tether.streams import sse
from tether.streams.tail import Backlog, Batch
from tether.streams.wire import format_offset

KEEP_ALIVE = b": keep-alive\n\n"
#: Headers of every event stream: no caching, and no buffering by a proxy (nginx).
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

#: The frames of one batch of events (at least one), or None when the session
#: has been quiet for a while (time for a keep-alive).
Frames = list[bytes] | None


class Translator(Protocol):
    """A front's view of a session's events."""

    @property
    def finished(self) -> bool:
        """True once the front has all it wants: the relay stops after this event."""
        ...

    def frame(self, position: int, event: bytes) -> bytes:
        """What to write for ``event`` (its JSON), which ends at ``position``; b"": nothing."""
        ...

    def last(self) -> bytes:
        """Written once :attr:`finished`, whatever the first written position (b"": nothing)."""
        ...


class Follow:
    """One reader of a session: its events from ``start``, translated, batch by batch.

    Events up to ``after`` only bring the translator up to date (a reader that
    resumes from an offset replays what it had seen, silently). ``on_end`` is
    called once the reader is done, however it ends. ``send_buffer``: the bytes that
    may wait for the client before the reader is cut off (None: no bound); the
    task that makes the Follow must be the one that writes its frames.
    """

    __slots__ = ("backlog", "frames", "leave")

    def __init__(
        self,
        sessions: SessionService,
        session_id: str,
        start: int,
        translator: Translator,
        *,
        stop: asyncio.Future[None],
        after: int | None = None,
        on_end: Callable[[], None] | None = None,
        send_buffer: int | None = None,
    ) -> None:
        #: Resolved when the reader's client has gone: the reader stops at once.
        self.leave: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.backlog: Backlog | None = None
        if send_buffer is not None:
            writer = asyncio.current_task()
            assert writer is not None
            self.backlog = Backlog(start, send_buffer, writer.cancel)
        self.frames: AsyncGenerator[Frames, None] = _frames(
            sessions, session_id, start, translator, stop, self.leave,
            start if after is None else after, on_end, self.backlog,
        )  # fmt: skip

    @property
    def cut(self) -> bool:
        """Cut off at its send buffer (and its writing task cancelled for it)."""
        return self.backlog is not None and self.backlog.cut

    def cut_off_reason(self, resume: str | None = None) -> str:
        """Why the reader was cut off, and the offset its client resumes from.

        ``resume``: that offset, when the writer knows better than the last batch
        it finished (a WebSocket writes a batch message by message).
        """
        assert self.backlog is not None
        offset = resume or format_offset(self.backlog.sent)
        return sse.cut_off_reason(self.backlog.limit, offset)

    async def aclose(self) -> None:
        await self.frames.aclose()


async def _frames(
    sessions: SessionService,
    session_id: str,
    start: int,
    translator: Translator,
    stop: asyncio.Future[None],
    leave: asyncio.Future[None],
    after: int,
    on_end: Callable[[], None] | None,
    backlog: Backlog | None,
) -> AsyncGenerator[Frames, None]:
    name = stream_name(session_id)
    if backlog is not None:
        sessions.store.notifier.listen(name, backlog)
    try:
        async for batch in sessions.follow(session_id, start, stop=stop, leave=leave):
            if batch is None:
                yield None
                continue
            position, out = _translate(translator, batch, after)
            if out:
                yield out
            if backlog is not None:
                backlog.sent_up_to(position)  # (the frames are written once this resumes)
            if translator.finished:
                return
    finally:
        if backlog is not None:
            sessions.store.notifier.unlisten(name, backlog)
        if on_end is not None:
            on_end()


def _translate(translator: Translator, batch: Batch, after: int) -> tuple[int, list[bytes]]:
    """The frames of ``batch`` past ``after``, and the position its translation stopped at."""
    frame = translator.frame
    position, events, _ = batch
    out: list[bytes] = []
    for event in events:
        position += 1
        written = frame(position, event)
        if written and position > after:
            out.append(written)
        if translator.finished:
            if last := translator.last():
                out.append(last)
            break
    return position, out


class EventStreamResponse(Response):
    """A :class:`Follow`'s frames as an event stream, written from the request's own task.

    Starlette's StreamingResponse runs the body in a task group of its own,
    so a completion's first chunk waited one more loop iteration for that
    task to start, and every response paid for the group. Here the body is
    written at once, and one plain task watches for the client leaving: it
    resolves the reader's :attr:`Follow.leave` (the session's run goes on; only
    this reader stops), and nothing more is written.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        follow: Follow,
        headers: dict[str, str],
        *,
        head: bytes = b"",
        resume: str | None = None,
    ) -> None:
        self.follow = follow
        #: Written first (frames read before the response, the stream's retry hint).
        self.head = head
        #: The offset a client cut off resumes from, when not the last one it was sent.
        self.resume = resume
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        leave = self.follow.leave
        gone = asyncio.ensure_future(_disconnected(receive))
        gone.add_done_callback(lambda _: _settle(leave))
        metrics.SSE_READERS.inc()  # one reader, counted at connect and disconnect
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if self.head:
                await send({"type": "http.response.body", "body": self.head, "more_body": True})
            try:
                async for frames in self.follow.frames:
                    if gone.done():
                        return
                    body = KEEP_ALIVE if frames is None else b"".join(frames)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            except asyncio.CancelledError:
                if not uncancel_if_cut(self.follow, "sse"):
                    raise
                # Let go of the session first: the client may not read these last words soon.
                await self.follow.aclose()
                body = f": {self.follow.cut_off_reason(self.resume)}\n\n".encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not gone.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            metrics.SSE_READERS.dec()
            gone.cancel()
            try:
                await self.follow.aclose()
            finally:
                await asyncio.wait((gone,))


def uncancel_if_cut(follow: Follow, transport: str) -> bool:
    """Whether the cancellation being handled is ``follow``'s cut-off; if so, undo it."""
    if not follow.cut:
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    metrics.READERS_CUT_OFF.labels(transport).inc()
    return True


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
