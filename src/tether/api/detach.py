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
cancelled here when its last reader here leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tether.runtime.tasks import cancel_and_wait

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
        self, cancel: Callable[[str, str], Awaitable[Any]], grace: float = DEFAULT_GRACE
    ) -> None:
        self._cancel = cancel
        self.grace = grace
        self._count: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        #: Cancels under way; awaited by :meth:`aclose`.
        self._cancels: set[asyncio.Task[None]] = set()

    def join(self, session_id: str, run_id: str) -> None:
        """A reader of the run starts (it stops a pending cancel)."""
        key = (session_id, run_id)
        self._count[key] = self._count.get(key, 0) + 1
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def leave(self, session_id: str, run_id: str, *, gone: bool) -> None:
        """A reader stops; ``gone``: its client left while the run went on."""
        key = (session_id, run_id)
        left = self._count.get(key, 0) - 1
        if left > 0:
            self._count[key] = left
            return
        self._count.pop(key, None)
        if not gone:
            return
        if self.grace <= 0:
            self._expire(key)
        else:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self.grace, self._expire, key)

    def _expire(self, key: Key) -> None:
        self._timers.pop(key, None)
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
