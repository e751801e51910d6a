"""A live SSE reader: frames queued by the stream's fan-out, under a bound.

The notifier hands each append to every live reader of the stream in one pass
(:meth:`TailNotifier.listen`): the reader queues the shared, once-encoded
frame and wakes its task, which writes whatever is queued in one send. A
reader whose client does not take its frames is cut off once its queue holds
more than ``limit`` bytes: the queue is dropped, the reader stops listening,
and it holds nothing of the stream from then on. Its client resumes from the
last offset it received, as after any end of an SSE response.
"""

from __future__ import annotations

import asyncio

from tether.observability import metrics
from tether.store.notify import TailEvent
from tether.streams import sse
from tether.streams.wire import format_offset

_CUT_OFF = metrics.READERS_CUT_OFF.labels("sse")


class LiveReader:
    """One SSE response following a stream live from ``offset``."""

    __slots__ = ("closed", "cursor", "cut", "due", "encoding", "frames", "gap", "limit",
                 "offset", "queued", "sent", "waiter")  # fmt: skip

    def __init__(self, offset: int, encoding: str, cursor: str, limit: int) -> None:
        #: Where the next append must start, and where the queue starts.
        self.offset = offset
        self.sent = offset
        self.encoding = encoding
        self.cursor = cursor
        self.limit = limit
        self.frames: list[bytes] = []
        self.queued = 0
        #: The task's wait while its queue is empty (resolved by a delivery or an end).
        self.waiter: asyncio.Future[None] | None = None
        #: The stream closed or was deleted: write what is queued, then end.
        self.closed = False
        #: Out of step with the appends (a resync, a mid-chunk resume): read the store.
        self.gap = False
        #: More than ``limit`` bytes were waiting for the client: end, with the reason.
        self.cut = False
        #: When the task must write without an append (a heartbeat, or the response's end).
        self.due = 0.0

    def deliver(self, ev: TailEvent) -> bool:
        """Queue one append (called by the notifier's fan-out, for every reader at once).

        False once nothing more will be queued (the notifier then lets go of it).
        """
        if self.closed or self.gap or self.cut:
            return False
        if ev.deleted:
            self.closed = True
        elif ev.start == self.offset:
            frame = live_frame(ev, self.encoding, self.cursor)
            self.offset = ev.end
            self.closed = ev.closed
            frames = self.frames
            frames.append(frame)
            self.queued += len(frame)
            if self.queued > self.limit and len(frames) > 1:  # one frame always fits
                frames.clear()
                self.queued = 0
                self.cut = True
                _CUT_OFF.inc()
        elif ev.end > self.offset or ev.closed:
            self.gap = True
        else:
            return True  # already sent (read from the store before this reader listened)
        self.wake()
        return not (self.closed or self.gap or self.cut)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def woken(self, _: object) -> None:
        """:meth:`wake`, as a done-callback (the client left)."""
        self.wake()

    @property
    def done(self) -> bool:
        """Nothing more will be queued (the task ends once the queue is written)."""
        return self.closed or self.gap or self.cut

    def take(self) -> bytes:
        """Everything queued, as one body."""
        frames = self.frames
        body = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        self.queued = 0
        self.sent = self.offset
        return body

    def cut_off_frame(self) -> bytes:
        """What a cut-off reader reads last: why, and where to resume (an SSE comment)."""
        return sse.cut_off_comment(self.limit, format_offset(self.sent))


def live_frame(ev: TailEvent, encoding: str, cursor: str) -> bytes:
    """The data + control frame of one append, encoded once for all its readers."""
    up_to_date = not ev.next.done()
    key = (encoding, cursor, up_to_date)
    frame = ev.cache.get(key)
    if frame is None:
        frame = sse.control_frame(format_offset(ev.end), cursor, up_to_date, ev.closed)
        if ev.chunks:
            data_key = (encoding,)
            data = ev.cache.get(data_key)
            if data is None:
                data = sse.data_frame(ev.chunks, encoding)
                ev.cache[data_key] = data
            frame = data + frame
        ev.cache[key] = frame
    return frame
