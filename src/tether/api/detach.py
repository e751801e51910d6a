"""Stop on disconnect: a gateway run nobody reads any more is cancelled.

A completion's upstream request costs money for as long as it runs. OpenAI's
own clients stop a request by closing its stream, so the gateway does the
same: when the last reader of a run has gone (its client left, not its run
ended), a timer of ``grace`` seconds starts, and the run is cancelled (its
upstream request aborted) unless a reader comes back first: a client that
resumes the stream within the grace period finds its run still going. A
request may ask for a detached run instead (``X-Tether-Detach: true``): its
readers are not counted, and the run goes on to its end whoever reads it.

Readers are counted per process: a run read only through another replica is
cancelled here when its last reader here leaves. A reader cut off at its send
buffer (``api/relay.py``) counts as one whose client left: its client resumes
within the grace period, or the run is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tether.api.relay import Follow, Translator
from tether.runtime.tasks import cancel_and_wait
from tether.sessions.service import SessionService

log = logging.getLogger(__name__)

#: ``X-Tether-Detach``: "true" keeps a run going when its readers leave.
HEADER = "x-tether-detach"
#: Seconds a run with no reader waits for one before it is cancelled.
DEFAULT_GRACE = 30.0

Key = tuple[str, str]


def detach_requested(value: str | None, *, default: bool = False) -> bool:
    """The ``X-Tether-Detach`` header's answer (``true``/``false``; absent: ``default``)."""
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes")


class Readers:
    """Who reads each run of the gateway, and the cancels of the runs nobody reads."""

    def __init__(
        self,
        cancel: Callable[[str, str], Awaitable[Any]],
        grace: float = DEFAULT_GRACE,
        *,
        send_buffer: int | None = None,
    ) -> None:
        """``send_buffer``: the bytes each reader may have waiting for its client (relay.py)."""
        self._cancel = cancel
        self.grace = grace
        self.send_buffer = send_buffer
        #: Readers of each watched run (one whose request did not ask to detach).
        self._count: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        #: Cancels under way; awaited by :meth:`aclose`.
        self._cancels: set[asyncio.Task[None]] = set()

    def join(self, session_id: str, run_id: str, *, watch: bool = False) -> bool:
        """A reader of the run starts; True if it is counted.

        ``watch``: the reader of the request that started the run, which did
        not ask to detach it: from now on the run stops when its readers have
        left. A reader of a run nobody watches is not counted.
        """
        key = (session_id, run_id)
        count = self._count.get(key)
        if count is None and not watch:
            return False
        self._count[key] = (count or 0) + 1
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        return True

    def leave(self, session_id: str, run_id: str, *, gone: bool) -> None:
        """A counted reader stops; ``gone``: its client left while the run went on."""
        key = (session_id, run_id)
        left = self._count.get(key, 0) - 1
        if left > 0:
            self._count[key] = left
            return
        if not gone:  # the run ended (or the server stops): nothing to watch any more
            self._count.pop(key, None)
            return
        self._count[key] = 0
        if self.grace <= 0:
            self._expire(key)
        else:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self.grace, self._expire, key)

    def follow(
        self,
        sessions: SessionService,
        session_id: str,
        run_id: str | None,
        start: int,
        translator: Translator,
        *,
        stop: asyncio.Future[None],
        after: int | None = None,
        watch: bool = False,
        on_end: Callable[[], None] | None = None,
        bounded: bool = True,
    ) -> Follow:
        """A reader of run ``run_id``'s answer (see :meth:`join`), counted until it ends.

        ``bounded``: its frames are written to its client as they come, so it gets
        the send buffer; a reader that keeps the answer for one response does not.
        """
        bound = self.send_buffer if bounded else None
        if run_id is None or not self.join(session_id, run_id, watch=watch):
            return Follow(
                sessions, session_id, start, translator, stop=stop, after=after, on_end=on_end,
                send_buffer=bound,
            )  # fmt: skip
        run: str = run_id

        def ended() -> None:
            if on_end is not None:
                on_end()
            gone = (follow.leave.done() or follow.cut) and not translator.finished
            self.leave(session_id, run, gone=gone)

        follow = Follow(
            sessions, session_id, start, translator, stop=stop, after=after, on_end=ended,
            send_buffer=bound,
        )  # fmt: skip
        return follow

    def _expire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self._count.pop(key, None)
        task = asyncio.ensure_future(self._stop(*key))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _stop(self, session_id: str, run_id: str) -> None:
        try:
            await self._cancel(session_id, run_id)
            log.info("cancelled run %s of session %s: its readers left", run_id, session_id)
        except Exception:
            log.warning("could not cancel run %s whose readers left", run_id, exc_info=True)

    async def aclose(self) -> None:
        """Drop the pending timers (the runs are the runtime's to end) and await the cancels."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await cancel_and_wait(list(self._cancels))
