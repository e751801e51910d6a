"""Live tailing: one notification wakes every local reader of a stream.

Each watched stream has one pending future. An append resolves it with a
``TailEvent`` that carries the new data and the *next* pending future, so the
events form a chain: a reader that took the pending future before it last read
the store sees every later append exactly once, without polling and without
one wake-up per reader. Readers that fall behind simply hold an older link;
links nobody holds are garbage.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class TailEvent:
    start: int
    end: int
    chunks: list[bytes]
    closed: bool
    next: asyncio.Future[TailEvent]
    deleted: bool = False
    #: Encodings computed once and shared by every reader (SSE frames, ...).
    cache: dict[object, bytes] = field(default_factory=dict)


class TailNotifier:
    def __init__(self) -> None:
        #: The loop of the store that owns this notifier, set while it is open.
        #: On Python 3.11 ``asyncio.get_running_loop()`` makes a system call
        #: (getpid), and readers take a future per append.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, asyncio.Future[TailEvent]] = {}
        self._watchers: dict[str, int] = {}
        self._sleepers: dict[str, set[asyncio.Future[None]]] = {}

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The store's loop while it is open, else the running one (looked up)."""
        return self.loop or asyncio.get_running_loop()

    def sleeper(self, path: str) -> asyncio.Future[None]:
        """A future of the caller's own, resolved by the next publish on ``path``.

        Awaiting the shared pending future wakes a reader one loop iteration
        late (its done-callbacks are scheduled, and asyncio.wait adds one more
        hop); a sleeper is resolved by publish itself. Cancelling it (a
        timeout) touches nobody else's. Give it back with :meth:`drop_sleeper`.
        """
        waiter: asyncio.Future[None] = self.running_loop().create_future()
        self._sleepers.setdefault(path, set()).add(waiter)
        return waiter

    def drop_sleeper(self, path: str, waiter: asyncio.Future[None]) -> None:
        sleepers = self._sleepers.get(path)
        if sleepers is not None:
            sleepers.discard(waiter)
            if not sleepers:
                del self._sleepers[path]

    def watch(self, path: str) -> asyncio.Future[TailEvent]:
        """The future the next change to ``path`` resolves; take it before reading."""
        fut = self._pending.get(path)
        if fut is None:
            fut = self.running_loop().create_future()
            self._pending[path] = fut
        return fut

    def subscribe(self, path: str) -> None:
        self._watchers[path] = self._watchers.get(path, 0) + 1

    def unsubscribe(self, path: str) -> None:
        n = self._watchers.get(path, 0) - 1
        if n > 0:
            self._watchers[path] = n
            return
        self._watchers.pop(path, None)
        fut = self._pending.pop(path, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def publish(
        self,
        path: str,
        start: int,
        end: int,
        chunks: list[bytes],
        closed: bool,
        deleted: bool = False,
    ) -> None:
        fut = self._pending.get(path)
        if fut is None:
            return
        if fut.done():
            # Cancelled by the last unsubscribe racing a new watcher; start afresh.
            del self._pending[path]
            return
        nxt: asyncio.Future[TailEvent] = fut.get_loop().create_future()
        if path in self._watchers and not deleted:
            self._pending[path] = nxt
        else:
            del self._pending[path]
        fut.set_result(TailEvent(start, end, chunks, closed, nxt, deleted))
        sleepers = self._sleepers.pop(path, None)
        if sleepers:
            for waiter in sleepers:
                if not waiter.done():
                    waiter.set_result(None)

    def watcher_count(self, path: str) -> int:
        return self._watchers.get(path, 0)
