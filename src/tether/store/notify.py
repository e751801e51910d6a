"""Live tailing: one notification wakes every local reader of a stream.

Each watched stream has one pending future. An append resolves it with a
``TailEvent`` that carries the new data and the *next* pending future, so the
events form a chain: a reader that took the pending future before it last read
the store sees every later append exactly once, without polling and without
one wake-up per reader. Readers that fall behind simply hold an older link;
links nobody holds are garbage.

Live SSE readers do not hold links: they *listen* (:meth:`TailNotifier.listen`),
and each append is handed to every listener of its stream in one callback a
loop iteration after the append, so the append's own answer goes out first and
the fan-out costs one pass over the listeners, not a task wake-up per link.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


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


class Listener(Protocol):
    def deliver(self, event: TailEvent, /) -> bool:
        """Take one append (or the stream's deletion); False: listen no more.

        Called for every listener of the stream in one pass: must not block or raise.
        """


class TailNotifier:
    def __init__(self) -> None:
        #: The loop of the store that owns this notifier, set while it is open.
        #: On Python 3.11 ``asyncio.get_running_loop()`` makes a system call
        #: (getpid), and readers take a future per append.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, asyncio.Future[TailEvent]] = {}
        self._watchers: dict[str, int] = {}
        self._sleepers: dict[str, set[asyncio.Future[None]]] = {}
        #: Per stream, its listeners (a dict as an ordered set).
        self._listeners: dict[str, dict[Listener, None]] = {}
        #: Appends published and not yet handed to their listeners.
        self._outbox: list[tuple[str, dict[Listener, None], TailEvent]] = []

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

    def listen(self, path: str, listener: Listener) -> None:
        """Hand every later append to ``path`` to ``listener`` (see the module's note).

        Appends published before this call and not yet handed out reach it too:
        a listener skips what it already has by offset.
        """
        self._listeners.setdefault(path, {})[listener] = None

    def unlisten(self, path: str, listener: Listener) -> None:
        listeners = self._listeners.get(path)
        if listeners is not None:
            listeners.pop(listener, None)
            if not listeners and self._listeners.get(path) is listeners:
                del self._listeners[path]

    def listener_count(self, path: str) -> int:
        return len(self._listeners.get(path, ()))

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
        listeners = self._listeners.get(path)
        if fut is not None and fut.done():
            # Cancelled by the last unsubscribe racing a new watcher; start afresh.
            del self._pending[path]
            fut = None
        if fut is None and listeners is None:
            return
        loop = self.running_loop()
        nxt: asyncio.Future[TailEvent] = loop.create_future()
        if (path in self._watchers or listeners is not None) and not deleted:
            self._pending[path] = nxt
        else:
            self._pending.pop(path, None)
        event = TailEvent(start, end, chunks, closed, nxt, deleted)
        if fut is not None:
            fut.set_result(event)
        if listeners is not None:
            if not self._outbox:
                # Two hops: the append's answer, resolved after this publish in
                # the same iteration (a group commit), is written first.
                loop.call_soon(loop.call_soon, self._hand_out)
            self._outbox.append((path, listeners, event))
        sleepers = self._sleepers.pop(path, None)
        if sleepers:
            for waiter in sleepers:
                if not waiter.done():
                    waiter.set_result(None)

    def _hand_out(self) -> None:
        """Give each published append to its stream's listeners, in order."""
        outbox, self._outbox = self._outbox, []
        for path, listeners, event in outbox:
            for listener in list(listeners):
                if not listener.deliver(event):
                    self.unlisten(path, listener)

    def watcher_count(self, path: str) -> int:
        return self._watchers.get(path, 0)
