"""The driver of a session: the one process that runs its runs, and what it holds.

Replicas that share a store (Redis) may all receive requests for the same
session, so each session has a *driver*: the process holding the session's
lease (``session:{id}`` in the store). Only the driver starts runs, keeps the
queue, and appends ``run-end``; it renews the lease while it has work and lets
it go when the session is idle. Every other replica speaks to it through the
session's stream, which the driver follows while it drives:

- a message (or edit, regenerate, continue) becomes a ``submit`` event; the
  driver queues it and announces the queue with ``queue-update``;
- ``cancel``, ``tool-result`` and ``tool-approval`` events are acted on by the
  driver as soon as they arrive (a run's own replica acts on them at once).

The stream is the whole truth: the fold knows the queue, what was submitted
since it was announced, what was cancelled, and each open run's journal. So
when a driver dies, its lease lapses; the reaper of any replica
(tether.runtime.keeper) takes the lease, continues the run left open from its
journal (or, for an agent that opted out of replay, ends it ``interrupted``)
and carries on with the queue. A driver that loses its lease stops its run
without ending it: whoever holds the lease next continues or ends it, so a
run never ends twice. A suspended run (tether.runtime.execution) is open and
has no driver: the queue waits behind it, and an answer to one of its waits
continues it.

A :class:`SessionDriver` is this process's side of one session, in one of
four states, changed only by :meth:`SessionDriver._set_state`, which refuses
a transition the table below does not allow::

    FREE ──take the lease──▶ DRIVING ──begin a run──▶ RUNNING
      ▲                       │   ▲                      │
      └──let the lease go─────┘   └──its run-end is in───┘
    FREE, DRIVING, RUNNING ──the lease is lost──▶ LOST (for good)

On a store this process owns alone (SQLite, memory) leases never lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson

from tether.observability import metrics
from tether.observability.runs import LEDGER
from tether.runtime.context import RunContext
from tether.runtime.execution import Run, begin, end, resume
from tether.runtime.expiry import end_expired, expired_wait
from tether.runtime.names import RUNS, lease_name
from tether.runtime.policy import RunPolicy
from tether.runtime.queue import QueueItem, queue_update
from tether.runtime.tasks import cancel_and_wait
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionRecord, SessionService, SessionState, stream_name
from tether.store.errors import LeaseLost, StreamNotFound
from tether.streams.tail import tail

log = logging.getLogger(__name__)

#: Seconds a driver's lease lasts unrenewed (it is renewed every third of it),
#: so a dead replica's runs are taken over within this plus the reap interval.
LEASE_TTL = 6.0
#: Lease time on a store nothing else shares: nobody could take over anyway.
_FOREVER = 10.0 * 365 * 24 * 3600
#: Events a driver must act on when another replica appends them.
_WATCHED = frozenset({ev.SUBMIT, ev.CANCEL, ev.TOOL_RESULT, ev.TOOL_APPROVAL, ev.CLIENT_RESPONSE})

Agent = Callable[[RunContext], Awaitable[None]]
AgentResolver = Callable[[SessionRecord], Agent]
#: An agent may bring its own kind of context (a RunContext subclass that
#: offers more, such as the server's models and tools) as a ``make_context``
#: attribute, called with RunContext's keyword arguments; the runtime uses it
#: in place of RunContext.
ContextFactory = Callable[..., RunContext]
#: Hands a session whose agent runs elsewhere (tether workers) to whoever runs it,
#: instead of driving it here; returns whether the session is served elsewhere.
Dispatch = Callable[[SessionState], Awaitable[bool]]


class DriverState(enum.Enum):
    #: Does not hold the lease: another process may drive the session, or none.
    FREE = "free"
    #: Holds the lease, with no run active: keeps the queue, acts on inputs.
    DRIVING = "driving"
    #: Holds the lease and has an active run, from its opening events until its
    #: run-end is written: nothing else starts, or ends it, meanwhile.
    RUNNING = "running"
    #: The lease was lost: the run stops here and whoever drives next ends it.
    #: Final: the next request for the session gets a new driver.
    LOST = "lost"


_DRIVING, _RUNNING, _LOST = DriverState.DRIVING, DriverState.RUNNING, DriverState.LOST

#: The transitions a driver may make. FREE -> LOST: an append as the driver
#: (a seed's) may be refused after the driver let the lease go, which tells it
#: the same thing as a renewal that failed.
TRANSITIONS: dict[DriverState, frozenset[DriverState]] = {
    DriverState.FREE: frozenset({DriverState.DRIVING, DriverState.LOST}),
    DriverState.DRIVING: frozenset({DriverState.FREE, DriverState.RUNNING, DriverState.LOST}),
    DriverState.RUNNING: frozenset({DriverState.DRIVING, DriverState.LOST}),
    DriverState.LOST: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A driver was asked for a transition its table forbids: a bug, never a client's doing."""

    def __init__(self, old: DriverState, new: DriverState) -> None:
        super().__init__(f"a session driver cannot go from {old.name} to {new.name}")
        self.old = old
        self.new = new


class Drivers:
    """This process's session drivers, and what they all share.

    The store and the session service, the agents, this process's name as a
    lease holder, the lease terms, and every task that must be awaited before
    the process stops.
    """

    def __init__(
        self,
        sessions: SessionService,
        resolve_agent: AgentResolver,
        *,
        lease_ttl: float = LEASE_TTL,
        retry_lost_runs: bool = False,
        policy: RunPolicy | None = None,
        dispatch: Dispatch | None = None,
        worker: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.resolve_agent = resolve_agent
        #: Sessions of agents served elsewhere go there (tether.runtime.dispatch).
        self.dispatch = dispatch
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        #: Look again for work after letting a session go. False in a tether worker:
        #: it cannot read a session it let go, and the server dispatches the
        #: session again when input lands there.
        self.retakes = True
        #: Other processes use the store too: leases lapse, and inputs may come
        #: from them through the stream.
        self.shared = not self.store.exclusive
        self.lease_ttl = lease_ttl if self.shared else _FOREVER
        #: A lost run of an agent that cannot replay is answered again (once) by
        #: the next driver, rather than only ended as interrupted.
        self.retry_lost_runs = retry_lost_runs
        self.policy = policy or RunPolicy()
        #: Set once for good when the process shuts down: nothing new starts.
        self.closing = False
        #: Tasks executing runs here.
        self.runs: set[asyncio.Task[None]] = set()
        #: Session id -> its latest note to its record still being written
        #: (tether.runtime.execution._note: each waits for the one before).
        self.notes: dict[str, asyncio.Future[None]] = {}
        self._by_session: dict[str, SessionDriver] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        #: Resolved when no session is driven here any more (:meth:`until_none_driven`).
        self._none_driven: list[asyncio.Future[None]] = []
        metrics.watch_runs(self)

    def active_runs(self) -> int:
        return len(self.runs)

    def queued_runs(self) -> int:
        """Runs queued in the sessions driven here (read when metrics are scraped)."""
        return sum(len(d.queue) for d in self._by_session.values() if d.driving)

    def find(self, session_id: str) -> SessionDriver | None:
        return self._by_session.get(session_id)

    def get(self, session_id: str) -> SessionDriver:
        """The session's driver in this process, made (FREE) if there is none."""
        driver = self._by_session.get(session_id)
        if driver is None:
            driver = self._by_session[session_id] = SessionDriver(session_id, self)
        return driver

    def drop(self, session_id: str, driver: SessionDriver | None = None) -> None:
        """Forget the session's driver (only if it is ``driver``, when one is named)."""
        if driver is None or self._by_session.get(session_id) is driver:
            self._by_session.pop(session_id, None)
            self.released()

    def driven(self) -> int:
        """Sessions whose lease this process holds."""
        return sum(1 for driver in self._by_session.values() if driver.driving)

    def released(self) -> None:
        """A driver stopped driving, or was forgotten: wake the waiters if none drives now."""
        if self._none_driven and not self.driven():
            for waiter in self._none_driven:
                if not waiter.done():
                    waiter.set_result(None)
            self._none_driven.clear()

    async def until_none_driven(self) -> None:
        """Return once no session is driven here: woken by :meth:`released`, no timer."""
        while self.driven():
            waiter = asyncio.get_running_loop().create_future()
            self._none_driven.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._none_driven:
                    self._none_driven.remove(waiter)

    def __iter__(self) -> Iterator[SessionDriver]:
        return iter(list(self._by_session.values()))

    async def drive(self, session_id: str) -> SessionDriver | None:
        """Become the session's driver (taking its lease); None if another process is,
        or if the session's agent is served elsewhere (then it is dispatched there)."""
        if self.dispatch is not None and await self.dispatch(await self.sessions.state(session_id)):
            return None
        driver = self.get(session_id)
        return driver if await driver.take() else None

    async def next(self, session_id: str, retake: bool = True) -> None:
        """Let the session's driver go on: the next queued run, or letting go."""
        driver = self._by_session.get(session_id)
        if driver is not None:
            await driver.next(retake)

    async def record(self, run_id: str, session_id: str) -> None:
        """Note a run until it ends, so a reaper can find its session if we die."""
        info = {"session_id": session_id, "worker": self.worker, "at": time.time()}
        await self.store.put_record(RUNS, run_id, orjson.dumps(info))

    def own(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background, awaited by :meth:`settle`."""
        fut = asyncio.ensure_future(coro)
        self._cleanups.add(fut)
        fut.add_done_callback(self._cleanups.discard)

    async def settle(self) -> None:
        """Wait for everything :meth:`own` started, and what that started in turn."""
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)


class SessionDriver:
    """This process's side of one session: its lease, queue, active run and follower."""

    __slots__ = ("_lease", "host", "lock", "queue", "run", "session_id", "state", "watcher")

    def __init__(self, session_id: str, host: Drivers) -> None:
        self.session_id = session_id
        #: The drivers of this process, and what they share.
        self.host = host
        #: Changed only by ``_set_state``.
        self.state = DriverState.FREE
        #: Runs waiting for the active one, in order (meaningful while driving).
        self.queue: deque[QueueItem] = deque()
        #: The active run: set in RUNNING, and in LOST until its task is done.
        self.run: Run | None = None
        #: Follows the stream for other replicas' inputs (shared stores only).
        self.watcher: asyncio.Task[None] | None = None
        #: Serialises taking and letting go of the lease.
        self.lock = asyncio.Lock()
        self._lease = (lease_name(session_id), host.worker) if host.shared else None

    def _set_state(self, new: DriverState) -> None:
        """The one place the state changes; InvalidTransition if the table forbids it."""
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(self.state, new)
        self.state = new
        if new is DriverState.FREE or new is _LOST:
            self.host.released()

    @property
    def driving(self) -> bool:
        """This process holds the session's lease."""
        return self.state is _DRIVING or self.state is _RUNNING

    @property
    def lost(self) -> bool:
        # Read on every append of a run: module constants, not enum attribute lookups.
        return self.state is _LOST

    def start_run(self, run: Run) -> None:
        """``run`` is the active run now (DRIVING -> RUNNING)."""
        self._set_state(DriverState.RUNNING)
        self.run = run

    def finish_run(self, run: Run) -> None:
        """``run`` is over here: its run-end is in, it never opened, or the lease is lost."""
        if self.run is not run:
            return
        self.run = None
        if self.state is DriverState.RUNNING:
            self._set_state(DriverState.DRIVING)

    async def fold(self) -> SessionFold:
        """The session's fold, caught up with everything in its stream, whoever appended it.

        The session service keeps the fold and catches it up on each call; the
        driver does not keep a reference of its own, which would keep the folds
        of every session it ever drove alive past the service's cache bound.
        """
        return (await self.host.sessions.state(self.session_id)).fold

    async def append(self, events: list[ev.Event]) -> int:
        """Append as the session's driver: refused, and the driver lost, once we are not."""
        try:
            return await self.host.sessions.append(self.session_id, events, lease=self._lease)
        except LeaseLost:
            self.lose()
            raise

    # -- the lease -------------------------------------------------------------

    async def take(self) -> bool:
        """Take the session's lease (FREE -> DRIVING); False if another process holds it."""
        if self.driving:
            return True
        host = self.host
        async with self.lock:
            if self.driving:
                return True
            if self.lost or host.closing:
                return False
            name = lease_name(self.session_id)
            if not await host.store.acquire_lease(name, host.worker, host.lease_ttl):
                return False
            if self.lost:  # an append of ours was refused meanwhile: we were not the driver
                with contextlib.suppress(Exception):
                    await host.store.release_lease(name, host.worker)
                return False
            self._set_state(DriverState.DRIVING)
            try:
                state = await host.sessions.state(self.session_id)
                if host.shared:
                    self.watcher = asyncio.create_task(
                        self._watch(state.position), name=f"tether-watch-{self.session_id}"
                    )
            except BaseException:
                if self.state is DriverState.DRIVING:
                    self._set_state(DriverState.FREE)
                await host.store.release_lease(name, host.worker)
                raise
        await self.reconcile()
        return self.driving

    async def let_go(self, *, queued_too: bool = False) -> None:
        """Give the lease up if nothing runs (and, unless ``queued_too``, nothing waits)."""
        async with self.lock:
            if self.state is not DriverState.DRIVING:
                return
            if self.queue and not queued_too:
                return
            self._set_state(DriverState.FREE)
            await self._stop_watcher()
            note = self.host.notes.get(self.session_id)
            if note is not None:  # written as the driver (a worker may write only so)
                await asyncio.gather(note, return_exceptions=True)
            with contextlib.suppress(Exception):  # else it lapses on its own
                await self.host.store.release_lease(lease_name(self.session_id), self.host.worker)

    def lose(self) -> None:
        """The lease is gone: stop here, leaving the run's end to the next driver."""
        self.host.drop(self.session_id, self)
        if self.lost:
            return
        log.warning("lost the lease of session %s; its run stops here", self.session_id)
        self._set_state(DriverState.LOST)
        self.queue.clear()
        self.host.own(self._stop_watcher())
        if self.run is not None:
            self.run.stop()

    async def idle(self, retake: bool = True) -> None:
        """Let the lease go once nothing runs or waits (or we are shutting down).

        With ``retake``, look again after letting go: a submit that landed
        meanwhile was meant for us (once only, so a run that cannot be ended
        now is left to the reaper rather than retried in a loop).
        """
        host = self.host
        await self.let_go(queued_too=host.closing)
        if not (retake and host.shared and host.retakes) or host.closing:
            return
        fold = await self.fold()
        if (fold.pending() or fold.active_run is not None) and await host.drive(self.session_id):
            await host.next(self.session_id, retake=False)

    # -- the queue -------------------------------------------------------------

    async def next(self, retake: bool = True) -> None:
        """Start the next queued run, or let the session go when there is none.

        If the store fails us here, the session is let go rather than left
        stuck: its runs are in the log and their records, for the next driver
        (another replica's reaper, or the next request here).
        """
        if self.state is not DriverState.DRIVING:
            return
        try:
            if self.queue and not self.host.closing and (await self.fold()).active_run:
                # A suspended run holds the session: the queue waits in the log.
                await self.let_go(queued_too=True)
            elif self.queue and not self.host.closing:
                item = self.queue.popleft()
                try:
                    await begin(self, item)
                except LeaseLost:
                    pass  # the next driver finds it in the log
                except BaseException:
                    self.queue.appendleft(item)
                    raise
            else:
                await self.idle(retake)
        except Exception as err:
            log.warning("session %s could not go on here (%s); letting it go", self.session_id, err)
            await self.let_go(queued_too=True)

    async def enqueue(self, item: QueueItem, front: bool) -> None:
        """Queue ``item`` and announce the queue; if the store refuses, it is not queued."""
        if front:
            self.queue.appendleft(item)
        else:
            self.queue.append(item)
        try:
            await self.append([queue_update(self.queue)])
        except BaseException:
            if item in self.queue:  # the caller is told it failed: it must not run later
                self.queue.remove(item)
            raise

    # -- what the stream says --------------------------------------------------

    async def reconcile(self) -> None:
        """Bring the driver's state in line with the stream: the one source of truth.

        Acts on cancels, tool results and approvals (whoever appended them),
        ends a run left open by a driver that is gone, and takes submitted
        runs into the queue.
        """
        with contextlib.suppress(LeaseLost):  # whoever drives now reconciles for itself
            await self._reconcile_once()

    async def _reconcile_once(self) -> None:
        if not self.driving:
            return
        fold = await self.fold()
        run = self.run
        if run is not None:
            if run.task is not None and not run.cancel_requested and run.run_id in fold.cancels:
                run.cancel()
            run.deliver_answers(fold)
        left_open = fold.active_run
        if left_open is not None and (run is None or left_open["run_id"] != run.run_id):
            await self._left_open(left_open, fold)
        taken = {q.run_id for q in self.queue}
        if self.run is not None:
            taken.add(self.run.run_id)
        front: list[QueueItem] = []
        back: list[QueueItem] = []
        for item, at_front in fold.pending():
            if item["run_id"] not in taken:
                (front if at_front else back).append(QueueItem.from_public(item))
        queue = [*reversed(front), *self.queue, *back]
        dropped = [q.run_id for q in queue if q.run_id in fold.cancels]
        if not (front or back or dropped):
            return
        # A queued run never started, but it still ends exactly once.
        self.queue = deque(q for q in queue if q.run_id not in dropped)
        await self.append(
            [
                queue_update(self.queue),
                *(ev.event(ev.RUN_END, run_id=r, reason=ev.CANCELLED) for r in dropped),
            ]
        )
        if dropped:
            record = await self.host.sessions.record(self.session_id)
            model = record.agent or record.model or "demo"
        for run_id in dropped:
            await self.host.store.delete_record(RUNS, run_id)
            LEDGER.ended(run_id, self.session_id, ev.CANCELLED, None, model)  # never started

    async def _left_open(self, left_open: dict[str, Any], fold: SessionFold) -> None:
        """A run open in the log that runs nowhere: continue it, end it, or let it wait."""
        if left_open["run_id"] not in fold.cancels:
            wait = expired_wait(fold)
            if wait is not None and not fold.resumable() and not self.host.closing:
                await end_expired(self, fold, wait)  # e.g. a worker the server dispatched it to
                return
            if not fold.resumable() or self.host.closing:
                return  # suspended with no answer yet, or for the next start to continue
            if self.run is None and await self._replayable():
                try:
                    await resume(self, left_open, fold)
                    return
                except LeaseLost:
                    raise
                except Exception as err:
                    log.warning("run %s cannot continue (%s); ending it", left_open["run_id"], err)
        await self._end_left_open(left_open, fold)

    async def _replayable(self) -> bool:
        """The session's agent continues lost runs from their journal (unless it opted out)."""
        try:
            record = await self.host.sessions.record(self.session_id)
            agent = self.host.resolve_agent(record)
        except Exception:
            return False  # not served here: the run is ended, as it cannot go on
        return bool(getattr(agent, "replay", True))

    async def _end_left_open(self, left_open: dict[str, Any], fold: SessionFold) -> None:
        """End a run a driver that is gone left open (and queue its retry, if configured)."""
        run_id = left_open["run_id"]
        reason = ev.CANCELLED if run_id in fold.cancels else ev.INTERRUPTED
        log.warning("run %s of session %s was left open; ending it as %s",
                    run_id, self.session_id, reason)  # fmt: skip
        then: list[ev.Event] = []
        model = left_open.get("model") or "unknown"
        LEDGER.adopted(run_id, self.session_id, model, None, left_open.get("started_at"))
        if self._retries(left_open, reason):
            retry = QueueItem(ev.new_id("run"), "regenerate", left_open["trigger"], retry_of=run_id)
            await self.host.record(retry.run_id, self.session_id)
            self.queue.appendleft(retry)
            then.append(queue_update(self.queue))
        try:
            await end(self, run_id, reason, then=then)
        except Exception as err:
            # Its record stays: the next driver, or the next look here, ends it.
            log.warning("could not end run %s: %s", run_id, err)

    def _retries(self, run: dict[str, Any], reason: str) -> bool:
        """Retry a lost run if configured, but not a retry: a run that takes its
        replica down each time must not take every replica down in turn."""
        return (
            self.host.retry_lost_runs
            and reason == ev.INTERRUPTED
            and run.get("trigger") is not None
            and "retry_of" not in run
        )

    async def _watch(self, position: int) -> None:
        """While driving: act on inputs other replicas append to the stream."""
        me = asyncio.current_task()
        name = stream_name(self.session_id)
        try:
            async for batch in tail(self.host.store, name, position):
                if self.watcher is not me:
                    return
                if batch is not None and any(_watched(chunk) for chunk in batch[1]):
                    await self.reconcile()
                    await self.host.next(self.session_id)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("stopped following session %s: %s", self.session_id, err)
        if self.watcher is not me:
            return
        try:
            await self.host.store.head(name)
        except StreamNotFound:
            # The session was deleted under its run.
            self.queue.clear()
            if self.run is not None:
                self.run.cancel()

    async def _stop_watcher(self) -> None:
        task, self.watcher = self.watcher, None
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait([task])


def _watched(chunk: bytes) -> bool:
    try:
        return orjson.loads(chunk).get("type") in _WATCHED
    except (orjson.JSONDecodeError, AttributeError):
        return False
