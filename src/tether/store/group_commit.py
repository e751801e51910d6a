"""Group commit: the writes of one event-loop iteration share one transaction.

With a persistence that supports it (SQLite), the first append of an
event-loop iteration is committed at once, and the writes after it in the
same iteration share one transaction. Each of those is checked and written at
once (so the next one, even to the same stream, sees it), but it is answered,
and its readers are notified, only after the commit that holds it, at the
start of the next iteration; until then reads and ``head`` see the stream as
last committed. (Committing the first one at once saves its readers a loop
iteration, which under load is most of what a token waits.) Record writes
(``put_record``, ``delete_record``, index writes) always join the group, and a
read of a record namespace with a write pending commits the group first, so
record reads too see only what is committed. Every other write commits the
pending group first, so it keeps its own one-transaction semantics. Under
load this turns one commit (and one WAL write) per write into at most two per
loop iteration.

:class:`GroupCommit` holds the pending group; ``LocalStore`` decides which
writes join it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from tether.observability.metrics import StoreMeters
from tether.store.base import StreamMeta
from tether.store.notify import TailNotifier
from tether.store.persistence import GroupPersistence, ProducerState, StreamRow

#: What an append's readers are told once it is committed: ``(start, end, chunks,
#: closed)``, the arguments of ``TailNotifier.publish`` after the path. (Plain
#: tuples, here and below: every grouped append builds one of each.)
Notice = tuple[int, int, list[bytes], bool]

#: A write waiting for its group's commit: ``(answer, path, notice)``; path and
#: notice are None for a record write.
_Waiter = tuple["asyncio.Future[None]", str | None, Notice | None]


class GroupCommit:
    """The pending group of writes: joining it, committing it, aborting it."""

    def __init__(
        self,
        persistence: GroupPersistence,
        notifier: TailNotifier,
        forget: Callable[[StreamMeta], None],
        meters: StoreMeters | None = None,
    ) -> None:
        """``forget`` drops a stream from the store's metadata cache (after an abort);
        ``meters`` count each commit's appends and time it."""
        self._meters = meters
        self._db = persistence
        self._notifier = notifier
        self._forget = forget
        self._waiters: list[_Waiter] = []
        #: The last committed metadata of streams with appends in the pending group.
        self.committed: dict[int, StreamMeta] = {}
        #: Namespaces with a record write in the pending group.
        self._records_pending: set[str] = set()
        #: An append was committed alone in this loop iteration: later ones group.
        self._grouping = False

    def joins(self) -> bool:
        """Whether an append made now joins the group (it is not its iteration's first)."""
        return self._grouping or bool(self._waiters)

    def group_rest_of_iteration(self) -> None:
        """An append was just committed alone: the rest of this iteration's join a group."""
        self._grouping = True
        self._notifier.running_loop().call_soon(self._end_grouping)

    def _end_grouping(self) -> None:
        self._grouping = False

    def last_committed(self, meta: StreamMeta) -> StreamMeta:
        """``meta`` as last committed: what readers see while its appends wait in the group."""
        return self.committed.get(meta.id, meta)

    def write(
        self,
        before: StreamMeta,
        metas: list[StreamMeta],
        rows: list[StreamRow],
        producers: list[ProducerState],
    ) -> None:
        """Write one append into the group; ``before``: its stream as last committed.

        The caller then caches the stream's new state and awaits :meth:`wait`.
        """
        try:
            self._db.write_deferred(metas, rows, producers)
        except BaseException as err:
            self.abort(err)
            raise
        self.committed.setdefault(before.id, before)

    async def write_record(self, namespace: str, write: Callable[[], None]) -> None:
        """Run a record (or index) write in the group; returns once it is committed."""
        try:
            self._db.begin_deferred()
            write()
        except BaseException as err:
            self.abort(err)
            raise
        self._records_pending.add(namespace)
        await self.wait(None, None)

    async def wait(self, path: str | None, notice: Notice | None) -> None:
        """Wait for the commit of the group this write has joined (then ``notice`` is published)."""
        await self.join(path, notice)

    def join(self, path: str | None, notice: Notice | None) -> asyncio.Future[None]:
        """:meth:`wait`'s future, for an append to await itself: one coroutine fewer
        to resume when the commit answers it."""
        loop = self._notifier.running_loop()
        if not self._waiters:
            loop.call_soon(self.flush)
        answer: asyncio.Future[None] = loop.create_future()
        self._waiters.append((answer, path, notice))
        return answer

    def flush_for(self, namespace: str) -> None:
        """Commit the group if it holds a write to ``namespace`` (before reading it)."""
        if namespace in self._records_pending:
            self.flush()

    def flush(self) -> None:
        """Commit the pending group, then notify its readers and answer its writes."""
        waiters = self._waiters
        if not waiters:
            return
        began = time.perf_counter()
        try:
            self._db.commit()
        except BaseException as err:
            self.abort(err)
            return
        took = time.perf_counter() - began
        self._waiters = []
        self.committed.clear()
        self._records_pending.clear()
        publish = self._notifier.publish
        appends = 0
        for answer, path, notice in waiters:
            if notice is not None:
                publish(path, *notice)  # type: ignore[arg-type]
                appends += 1
            if not answer.done():
                answer.set_result(None)
        if self._meters is not None:
            self._meters.committed(appends, took)

    def abort(self, err: BaseException) -> None:
        """The group could not be written or committed: undo it and fail its writes.

        The store's cache holds the group's state, so its streams are dropped
        from it (and reloaded from the log when next used).
        """
        waiters, self._waiters = self._waiters, []
        committed, self.committed = self.committed, {}
        self._records_pending.clear()
        with contextlib.suppress(Exception):
            self._db.rollback()
        for meta in committed.values():
            self._forget(meta)
        for answer, *_ in waiters:
            if not answer.done():
                answer.set_exception(err)
