"""Runs: executed in the server, one at a time per session, detached from clients.

The runtime owns every run task: it starts them, cancels them, and awaits them
on shutdown. Whatever happens inside a run (completion, cancel, an agent's
exception, shutdown), exactly one ``run-end`` is appended for it.

Which process runs a session's runs
-----------------------------------
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
since it was announced, and what was cancelled. So when a driver dies, its
lease lapses; the *reaper* of any replica (looking at the ``runs`` records,
one per queued or running run) takes the lease, ends the run left open as
``interrupted`` and carries on with the queue. A driver that cannot renew its
lease in time stops its run without ending it: whoever holds the lease next
ends it, so a run never ends twice.

On a store this process owns alone (SQLite, memory) leases never lapse, and
the reaper runs once at start, for the runs a dead process left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.runtime.context import Approval, RunContext, ToolOutcome
from tether.runtime.errors import Conflict, InvalidInput
from tether.runtime.names import RUNS, lease_name
from tether.runtime.queue import QueueItem, queue_update
from tether.runtime.tasks import cancel_and_wait
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionNotFound, SessionRecord, SessionService, stream_name
from tether.store.errors import LeaseLost, StreamNotFound
from tether.streams.tail import tail

log = logging.getLogger(__name__)

#: Seconds a driver's lease lasts unrenewed (it is renewed every third of it),
#: so a dead replica's runs are taken over within this plus ``REAP_INTERVAL``.
LEASE_TTL = 6.0
#: Seconds between two looks for sessions whose driver is gone.
REAP_INTERVAL = 1.0
#: A ``runs`` record whose run the stream never heard of (its replica died
#: between the two writes) is dropped after this many seconds.
ORPHAN_RECORD_AGE = 60.0
#: Lease time on a store nothing else shares: nobody could take over anyway.
_FOREVER = 10.0 * 365 * 24 * 3600
#: Seconds before the first retry of a run-end the store refused (the disk was
#: full, Redis away); each retry waits twice as long, up to END_RETRY_MAX_DELAY.
END_RETRY_DELAY = 0.1
END_RETRY_MAX_DELAY = 2.0
#: Seconds one attempt to write a run-end may take before it counts as failed.
END_ATTEMPT_TIMEOUT = 10.0
#: Events a driver must act on when another replica appends them.
_WATCHED = frozenset({ev.SUBMIT, ev.CANCEL, ev.TOOL_RESULT, ev.TOOL_APPROVAL})

Agent = Callable[[RunContext], Awaitable[None]]
AgentResolver = Callable[[SessionRecord], Agent]


@dataclass(slots=True, eq=False)
class _Live:
    """What the driver of one session holds in memory."""

    queue: deque[QueueItem] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    run_id: str | None = None
    assistant_id: str | None = None
    cancel_requested: bool = False
    waiters: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    #: This process holds the session's lease.
    driving: bool = False
    #: The lease was lost: the run stops here and another process ends it.
    lost: bool = False
    #: Follows the stream for other replicas' inputs (shared stores only).
    watcher: asyncio.Task[None] | None = None
    #: Serialises taking and letting go of the lease.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Runtime:
    def __init__(
        self,
        sessions: SessionService,
        resolve_agent: AgentResolver,
        *,
        lease_ttl: float = LEASE_TTL,
        reap_interval: float = REAP_INTERVAL,
        retry_lost_runs: bool = False,
    ) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.resolve_agent = resolve_agent
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        #: Other processes use the store too: leases lapse, and inputs may come
        #: from them through the stream.
        self.shared = not self.store.exclusive
        self.lease_ttl = lease_ttl if self.shared else _FOREVER
        self.reap_interval = reap_interval
        #: A run whose process died is answered again (once) by the next driver,
        #: rather than only ended as interrupted.
        self.retry_lost_runs = retry_lost_runs
        self._live: dict[str, _Live] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._cleanups: set[asyncio.Future[None]] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Take over what dead processes left (runs open, queues), then keep leases.

        On a shared store this goes on in the background: leases are renewed,
        and sessions whose driver died are taken over.
        """
        await self.reap()
        if self.shared:
            self._background = [
                asyncio.create_task(self._renew_forever(), name="tether-lease-renewer"),
                asyncio.create_task(self._reap_forever(), name="tether-reaper"),
            ]

    async def aclose(self) -> None:
        """Cancel every run (they end as interrupted), wait for them, let leases go."""
        self._closing = True
        await cancel_and_wait(self._background)
        self._background = []
        await cancel_and_wait(list(self._runs))
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        for session_id, live in list(self._live.items()):
            if live.driving:
                await self._idle(session_id, live)

    def _session(self, session_id: str) -> _Live:
        live = self._live.get(session_id)
        if live is None:
            live = self._live[session_id] = _Live()
        return live

    def _own(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background, awaited by ``aclose``."""
        fut = asyncio.ensure_future(coro)
        self._cleanups.add(fut)
        fut.add_done_callback(self._cleanups.discard)

    # -- inputs ----------------------------------------------------------------

    async def send(
        self,
        session_id: str,
        parts: list[dict[str, Any]],
        *,
        parent_id: str | None = None,
        interrupt: bool = False,
        edit_of: str | None = None,
    ) -> tuple[str, str, bool]:
        """Place a user message and answer it, now or after the runs before it."""
        state = await self.sessions.state(session_id)
        if parent_id is not None and parent_id not in state.fold.messages:
            raise InvalidInput(f"no message {parent_id} in this session")
        item = QueueItem(
            ev.new_id("run"), "message", ev.new_id("msg"), parts, parent_id,
            explicit_parent=parent_id is not None, edit_of=edit_of,
        )  # fmt: skip
        queued = await self._submit(session_id, item, interrupt)
        return item.message_id, item.run_id, queued

    async def edit(
        self, session_id: str, message_id: str, parts: list[dict[str, Any]]
    ) -> tuple[str, str, bool]:
        """A new version of a user message: a sibling branch, answered afresh."""
        state = await self.sessions.state(session_id)
        old = state.fold.messages.get(message_id)
        if old is None:
            raise InvalidInput(f"no message {message_id} in this session")
        if old.role != "user":
            raise InvalidInput("only user messages can be edited")
        item = QueueItem(
            ev.new_id("run"), "message", ev.new_id("msg"), parts, old.parent_id,
            explicit_parent=True, edit_of=message_id,
        )  # fmt: skip
        queued = await self._submit(session_id, item, False)
        return item.message_id, item.run_id, queued

    async def regenerate(self, session_id: str, message_id: str) -> tuple[str, bool]:
        """Answer again: a new assistant message beside the old one."""
        state = await self.sessions.state(session_id)
        msg = state.fold.messages.get(message_id)
        if msg is None:
            raise InvalidInput(f"no message {message_id} in this session")
        trigger = msg.id if msg.role == "user" else msg.parent_id
        if trigger is None:
            raise InvalidInput("that message answers nothing")
        item = QueueItem(ev.new_id("run"), "regenerate", trigger)
        queued = await self._submit(session_id, item, False)
        return item.run_id, queued

    async def answer(self, session_id: str, message_id: str) -> tuple[str, bool]:
        """Answer the branch that ends at ``message_id``, with no new user message.

        The answer becomes that message's child. This is how a conversation
        seeded by a client that ran the tools itself continues after their
        results (the branch then ends with an assistant message whose tool
        calls have results).
        """
        state = await self.sessions.state(session_id)
        if message_id not in state.fold.messages:
            raise InvalidInput(f"no message {message_id} in this session")
        item = QueueItem(ev.new_id("run"), "continue", message_id)
        queued = await self._submit(session_id, item, False)
        return item.run_id, queued

    async def seed(self, session_id: str, messages: list[dict[str, Any]]) -> str | None:
        """Place earlier turns of a conversation after the leaf, running nothing.

        For clients that hold the conversation themselves (the OpenAI-compatible
        gateway). Each item is ``{"role": "user", "text": ...}`` or
        ``{"role": "assistant", "text": ..., "tool_calls": [{"id", "name",
        "arguments", "result"?, "error"?}]}`` (arguments as JSON text or a
        value; a call with a ``result`` or ``error`` gets a tool-result).
        The events go in one atomic batch. Returns the new leaf's id (the old
        one if ``messages`` is empty). Conflict while a run is active or queued.
        """
        live = await self._drive(session_id)
        try:
            if live is None or live.run_id is not None or live.queue:
                raise Conflict("a session can be seeded only while it is idle")
            leaf = (await self.sessions.state(session_id)).fold.leaf
            batch: list[ev.Event] = []
            for msg in messages:
                message_id = ev.new_id("msg")
                if msg["role"] == "user":
                    batch.append(
                        ev.event(
                            ev.USER_MESSAGE, message_id=message_id, parent_id=leaf,
                            parts=[{"type": "text", "text": msg.get("text", "")}],
                        )
                    )  # fmt: skip
                elif msg["role"] == "assistant":
                    batch += _seeded_answer(message_id, leaf, msg)
                else:
                    raise InvalidInput(f"cannot seed a message with role {msg['role']!r}")
                leaf = message_id
            if batch:
                try:
                    await self._append(session_id, live, batch)
                except LeaseLost:
                    raise Conflict("the session was taken over by another replica") from None
            return leaf
        finally:
            if live is not None:
                await self._next(session_id)

    async def _submit(self, session_id: str, item: QueueItem, interrupt: bool) -> bool:
        await self._record(item.run_id, session_id)
        live = await self._drive(session_id)
        if live is not None:
            with contextlib.suppress(LeaseLost):  # taken over before the item was written
                return await self._submit_here(session_id, live, item, interrupt)
        return await self._hand_over(session_id, item, interrupt)

    async def _submit_here(
        self, session_id: str, live: _Live, item: QueueItem, interrupt: bool
    ) -> bool:
        """Queue or start ``item`` as the driver; LeaseLost means nothing was written."""
        busy = live.run_id is not None
        if interrupt and busy:
            await self._enqueue(session_id, live, item, front=True)
            await self.cancel(session_id, live.run_id)
            return True
        if busy or live.queue:
            await self._enqueue(session_id, live, item, front=False)
            await self._next(session_id)
            return True
        await self._begin(session_id, live, item)
        return False

    async def _enqueue(self, session_id: str, live: _Live, item: QueueItem, front: bool) -> None:
        """Queue ``item`` and announce the queue; if the store refuses, it is not queued."""
        if front:
            live.queue.appendleft(item)
        else:
            live.queue.append(item)
        try:
            await self._publish_queue(session_id, live)
        except BaseException:
            if item in live.queue:  # the caller is told it failed: it must not run later
                live.queue.remove(item)
            raise

    async def _hand_over(self, session_id: str, item: QueueItem, interrupt: bool) -> bool:
        """Another process drives the session: give it the item through the stream."""
        batch = [ev.event(ev.SUBMIT, **item.public(), front=interrupt or None)]
        if interrupt:
            active = (await self.sessions.state(session_id)).fold.active_run
            if active is not None:
                batch.append(ev.event(ev.CANCEL, run_id=active["run_id"]))
        await self.sessions.append(session_id, batch)
        # The driver may have let the session go before the submit landed.
        if await self._drive(session_id) is not None:
            await self._next(session_id)
        return True

    async def cancel(self, session_id: str, run_id: str | None = None) -> list[str]:
        """Stop the active run and drop queued ones (all, or the one named).

        Returns the runs that were running or queued. The run stops within
        ~200 ms here, and as fast when another replica runs it: its driver acts
        on the ``cancel`` event as soon as the event reaches it.
        """
        fold = (await self.sessions.state(session_id)).fold
        targets = [q["run_id"] for q, _ in fold.pending() if run_id in (None, q["run_id"])]
        live = self._live.get(session_id)
        active = live.run_id if live is not None and live.driving else None
        active = active or (fold.active_run or {}).get("run_id")
        if active is not None and run_id in (None, active) and active not in targets:
            targets.append(active)
        await self.sessions.append(
            session_id, [ev.event(ev.CANCEL, run_id=run_id, all=None if run_id else True)]
        )
        live = await self._drive(session_id)
        if live is not None:
            await self._reconcile(session_id, live)
            task = live.task
            if task is not None and live.cancel_requested:
                await asyncio.wait((task,), timeout=0.2)
            await self._next(session_id)
        return targets

    def run_task(self, session_id: str, run_id: str) -> asyncio.Task[None] | None:
        """The task executing run ``run_id``, if it executes in this process."""
        live = self._live.get(session_id)
        if live is None or live.run_id != run_id:
            return None
        return live.task

    async def tool_result(
        self, session_id: str, tool_call_id: str, output: Any = None, error: str | None = None
    ) -> None:
        state = await self.sessions.state(session_id)
        part = state.fold.tool_call(tool_call_id)
        if part is None:
            raise InvalidInput(f"no tool call {tool_call_id} in this session")
        if part.result is not None or part.error is not None:
            raise Conflict(f"tool call {tool_call_id} already has a result")
        await self.sessions.append(
            session_id,
            [ev.event(ev.TOOL_RESULT, tool_call_id=tool_call_id, output=output, error=error)],
        )
        live = self._live.get(session_id)
        if live is not None and live.driving:
            _resolve(live, f"result:{tool_call_id}", ToolOutcome(output, error))

    async def tool_approval(
        self, session_id: str, tool_call_id: str, approved: bool, reason: str | None = None
    ) -> None:
        state = await self.sessions.state(session_id)
        part = state.fold.tool_call(tool_call_id)
        if part is None:
            raise InvalidInput(f"no tool call {tool_call_id} in this session")
        if part.approval is not None:
            raise Conflict(f"tool call {tool_call_id} was already answered")
        await self.sessions.append(
            session_id,
            [
                ev.event(
                    ev.TOOL_APPROVAL, tool_call_id=tool_call_id, approved=approved, reason=reason
                )
            ],
        )
        live = self._live.get(session_id)
        if live is not None and live.driving:
            _resolve(live, f"approval:{tool_call_id}", Approval(approved, reason))

    async def forget(self, session_id: str) -> None:
        """Before a session is deleted: drop its queue and stop its run.

        A run on another replica stops when that replica sees the stream go.
        """
        live = self._live.get(session_id)
        if live is None or not live.driving:
            return
        await self.cancel(session_id)  # a cancel of everything: queued runs end too
        self._live.pop(session_id, None)

    async def _publish_queue(self, session_id: str, live: _Live) -> None:
        await self._append(session_id, live, [queue_update(live.queue)])

    async def _append(self, session_id: str, live: _Live, events: list[ev.Event]) -> int:
        """Append as the session's driver: refused, and the session let go, once we are not."""
        lease = (lease_name(session_id), self.worker) if self.shared else None
        try:
            return await self.sessions.append(session_id, events, lease=lease)
        except LeaseLost:
            self._lose(session_id, live)
            raise

    async def _record(self, run_id: str, session_id: str) -> None:
        """Note a run until it ends, so a reaper can find its session if we die."""
        info = {"session_id": session_id, "worker": self.worker, "at": time.time()}
        await self.store.put_record(RUNS, run_id, orjson.dumps(info))

    # -- driving: the lease, and what the stream says --------------------------

    async def _drive(self, session_id: str) -> _Live | None:
        """Become the session's driver (taking its lease); None if another process is."""
        live = self._session(session_id)
        if live.driving:
            return live
        async with live.lock:
            if live.driving:
                return live
            if self._closing:
                return None
            if not await self.store.acquire_lease(
                lease_name(session_id), self.worker, self.lease_ttl
            ):
                return None
            live.driving = True
            try:
                state = await self.sessions.state(session_id)
                if self.shared:
                    live.watcher = asyncio.create_task(
                        self._watch(session_id, live, state.position),
                        name=f"tether-watch-{session_id}",
                    )
            except BaseException:
                live.driving = False
                await self.store.release_lease(lease_name(session_id), self.worker)
                raise
        await self._reconcile(session_id, live)
        return live if live.driving else None

    async def _idle(self, session_id: str, live: _Live, retake: bool = True) -> None:
        """Let the lease go once nothing runs or waits (or we are shutting down).

        With ``retake``, look again after letting go: a submit that landed
        meanwhile was meant for us (once only, so a run that cannot be ended
        now is left to the reaper rather than retried in a loop).
        """
        await self._let_go(session_id, live, queued_too=self._closing)
        if not (retake and self.shared) or self._closing:
            return
        fold = (await self.sessions.state(session_id)).fold
        if (fold.pending() or fold.active_run is not None) and await self._drive(session_id):
            await self._next(session_id, retake=False)

    async def _stop_watcher(self, live: _Live) -> None:
        task, live.watcher = live.watcher, None
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait([task])

    async def _reconcile(self, session_id: str, live: _Live) -> None:
        """Bring the driver's state in line with the stream: the one source of truth.

        Acts on cancels, tool results and approvals (whoever appended them),
        ends a run left open by a driver that is gone, and takes submitted
        runs into the queue.
        """
        with contextlib.suppress(LeaseLost):  # whoever drives now reconciles for itself
            await self._reconcile_once(session_id, live)

    async def _reconcile_once(self, session_id: str, live: _Live) -> None:
        if not live.driving:
            return
        fold = (await self.sessions.state(session_id)).fold
        if live.run_id is not None:
            if live.task is not None and not live.cancel_requested and live.run_id in fold.cancels:
                live.cancel_requested = True
                live.task.cancel()
            _deliver_answers(live, fold)
        left_open = fold.active_run
        if left_open is not None and left_open["run_id"] != live.run_id:
            run_id = left_open["run_id"]
            reason = ev.CANCELLED if run_id in fold.cancels else ev.INTERRUPTED
            log.warning("run %s of session %s was left open; ending it as %s",
                        run_id, session_id, reason)  # fmt: skip
            then: list[ev.Event] = []
            if self._retries(left_open, reason):
                retry = QueueItem(
                    ev.new_id("run"), "regenerate", left_open["trigger"], retry_of=run_id
                )
                await self._record(retry.run_id, session_id)
                live.queue.appendleft(retry)
                then.append(queue_update(live.queue))
            try:
                await self._end(session_id, live, run_id, reason, then=then)
            except Exception as err:
                # Its record stays: the next driver, or the next look here, ends it.
                log.warning("could not end run %s: %s", run_id, err)
        taken = {q.run_id for q in live.queue}
        if live.run_id is not None:
            taken.add(live.run_id)
        front: list[QueueItem] = []
        back: list[QueueItem] = []
        for item, at_front in fold.pending():
            if item["run_id"] not in taken:
                (front if at_front else back).append(QueueItem.from_public(item))
        queue = [*reversed(front), *live.queue, *back]
        dropped = [q.run_id for q in queue if q.run_id in fold.cancels]
        if not (front or back or dropped):
            return
        # A queued run never started, but it still ends exactly once.
        live.queue = deque(q for q in queue if q.run_id not in dropped)
        await self._append(
            session_id,
            live,
            [
                queue_update(live.queue),
                *(ev.event(ev.RUN_END, run_id=r, reason=ev.CANCELLED) for r in dropped),
            ],
        )
        for run_id in dropped:
            await self.store.delete_record(RUNS, run_id)

    def _retries(self, run: dict[str, Any], reason: str) -> bool:
        """Retry a lost run if configured, but not a retry: a run that takes its
        replica down each time must not take every replica down in turn."""
        return (
            self.retry_lost_runs
            and reason == ev.INTERRUPTED
            and run.get("trigger") is not None
            and "retry_of" not in run
        )

    async def _watch(self, session_id: str, live: _Live, position: int) -> None:
        """While driving: act on inputs other replicas append to the stream."""
        me = asyncio.current_task()
        try:
            async for batch in tail(self.store, stream_name(session_id), position):
                if live.watcher is not me:
                    return
                if batch is not None and any(_watched(chunk) for chunk in batch[1]):
                    await self._reconcile(session_id, live)
                    await self._next(session_id)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("stopped following session %s: %s", session_id, err)
        if live.watcher is not me:
            return
        try:
            await self.store.head(stream_name(session_id))
        except StreamNotFound:
            # The session was deleted under its run.
            live.queue.clear()
            if live.task is not None:
                live.cancel_requested = True
                live.task.cancel()

    # -- leases and reaping (shared stores) ------------------------------------

    async def _renew_forever(self) -> None:
        interval = self.lease_ttl / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            driving = {lease_name(s): s for s, live in self._live.items() if live.driving}
            asked = time.monotonic()
            try:
                lost = await self.store.renew_leases(list(driving), self.worker, self.lease_ttl)
                renewed = asked
            except Exception as err:
                if asked - renewed < self.lease_ttl * 0.8:
                    log.warning("could not renew leases (%s); will retry", err)
                    continue
                # They may lapse at any moment now, and another replica take over.
                lost = list(driving)
            for name in lost:
                live = self._live.get(driving[name])
                if live is not None:
                    self._lose(driving[name], live)

    def _lose(self, session_id: str, live: _Live) -> None:
        """The lease is gone: stop here, leaving the run's end to the next driver."""
        if self._live.get(session_id) is live:
            del self._live[session_id]
        if live.lost:
            return
        log.warning("lost the lease of session %s; its run stops here", session_id)
        live.lost = True
        live.driving = False
        live.queue.clear()
        self._own(self._stop_watcher(live))
        if live.task is not None and live.task is not asyncio.current_task():
            live.task.cancel()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.reap()
            except Exception as err:
                log.warning("could not look for orphaned runs: %s", err)

    async def reap(self) -> None:
        """Take over sessions with runs (queued or running) whose driver is gone."""
        by_session: dict[str, list[tuple[str, float]]] = {}
        for run_id, raw in await self.store.list_records(RUNS):
            info = orjson.loads(raw)
            by_session.setdefault(info["session_id"], []).append((run_id, info.get("at", 0.0)))
        for session_id, runs in by_session.items():
            live = self._live.get(session_id)
            if self._closing or (live is not None and live.driving):
                continue
            if await self.store.lease_holder(lease_name(session_id)) is not None:
                continue
            try:
                if await self._drive(session_id) is not None:
                    await self._next(session_id)
                fold = (await self.sessions.state(session_id)).fold
            except SessionNotFound:
                fold = None
            except Exception:
                log.exception("could not take over session %s", session_id)
                continue
            for run_id, at in runs:
                if _finished(fold, run_id, at):
                    await self.store.delete_record(RUNS, run_id)

    # -- execution -------------------------------------------------------------

    async def _next(self, session_id: str, retake: bool = True) -> None:
        """Start the next queued run, or let the session go when there is none.

        If the store fails us here, the session is let go rather than left
        stuck: its runs are in the log and their records, for the next driver
        (another replica's reaper, or the next request here).
        """
        live = self._live.get(session_id)
        if live is None or not live.driving or live.run_id is not None:
            return
        try:
            if live.queue and not self._closing:
                item = live.queue.popleft()
                try:
                    await self._begin(session_id, live, item)
                except LeaseLost:
                    pass  # the next driver finds it in the log
                except BaseException:
                    live.queue.appendleft(item)
                    raise
            else:
                await self._idle(session_id, live, retake)
        except Exception as err:
            log.warning("session %s could not go on here (%s); letting it go", session_id, err)
            await self._let_go(session_id, live, queued_too=True)

    async def _let_go(self, session_id: str, live: _Live, *, queued_too: bool = False) -> None:
        """Give the lease up if nothing runs (and, unless ``queued_too``, nothing waits)."""
        async with live.lock:
            if not live.driving or live.run_id is not None:
                return
            if live.queue and not queued_too:
                return
            live.driving = False
            await self._stop_watcher(live)
            with contextlib.suppress(Exception):  # else it lapses on its own
                await self.store.release_lease(lease_name(session_id), self.worker)

    async def _begin(self, session_id: str, live: _Live, item: QueueItem) -> None:
        """Place the run's opening events, then execute it in a task of its own.

        The opening is appended before the caller is answered, so a snapshot
        taken right after ``send`` already shows the message and its run.
        """
        live.run_id = item.run_id
        live.cancel_requested = False
        try:
            opened = await self._open(session_id, live, item)
        except BaseException:
            live.run_id = None
            raise
        task = asyncio.create_task(
            self._run(session_id, live, item, *opened), name=f"tether-run-{item.run_id}"
        )
        live.task = task
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        task.add_done_callback(lambda t: self._unstarted(t, session_id, live, item))

    def _unstarted(
        self, task: asyncio.Task[None], session_id: str, live: _Live, item: QueueItem
    ) -> None:
        """A task cancelled before its first step never runs ``_run``: end its run here.

        (``_run`` catches its own cancellation, so a task that ran always ends
        normally; only one cancelled before it started ends up cancelled.)
        """
        if not task.cancelled():
            return
        reason = ev.CANCELLED if live.cancel_requested else ev.INTERRUPTED

        async def end() -> None:
            if live.task is task:
                live.task = None
            if not live.lost:
                await self._end_run(session_id, live, item.run_id, reason)
            if live.run_id == item.run_id:
                live.run_id = None
            if not live.lost:
                await self._next(session_id)

        self._own(end())

    async def _open(
        self, session_id: str, live: _Live, item: QueueItem
    ) -> tuple[SessionRecord, str]:
        record = await self.sessions.record(session_id)
        fold = (await self.sessions.state(session_id)).fold
        batch: list[ev.Event] = []
        if fold.queue or live.queue:
            batch.append(queue_update(live.queue))
        if item.kind == "message":
            batch.append(
                ev.event(
                    ev.USER_MESSAGE,
                    message_id=item.message_id,
                    parent_id=item.parent_id if item.explicit_parent else fold.leaf,
                    parts=item.parts,
                    edit_of=item.edit_of,
                )
            )
        assistant_id = live.assistant_id = ev.new_id("msg")
        batch += [
            ev.event(
                ev.RUN_START, run_id=item.run_id, trigger=item.message_id,
                model=record.agent or record.model or "demo", worker=self.worker,
                retry_of=item.retry_of,
            ),
            ev.event(ev.STATUS, status=ev.RUNNING),
            ev.event(
                ev.MESSAGE_START, run_id=item.run_id, message_id=assistant_id, role="assistant",
                parent_id=item.message_id,
            ),
        ]  # fmt: skip
        await self._append(session_id, live, batch)
        return record, assistant_id

    async def _run(
        self,
        session_id: str,
        live: _Live,
        item: QueueItem,
        record: SessionRecord,
        assistant_id: str,
    ) -> None:
        run_id = item.run_id
        reason = ev.COMPLETE
        failure: list[ev.Event] = []  # the error event of a run that failed
        try:
            state = await self.sessions.state(session_id)

            async def append(events: list[ev.Event]) -> int:
                if live.lost:
                    raise LeaseLost(lease_name(session_id))
                if live.cancel_requested:
                    # Cancelled, yet still running: something under the agent
                    # swallowed the cancel (asyncio.wait_for can, on 3.11).
                    raise asyncio.CancelledError
                return await self._append(session_id, live, events)

            async def on_status(status: str) -> None:
                await append([ev.event(ev.STATUS, status=status)])

            ctx = RunContext(
                session_id=session_id,
                run_id=run_id,
                message_id=assistant_id,
                model=record.model,
                system=record.system,
                history=state.fold.branch(item.message_id),
                append=append,
                waiters=live.waiters,
                on_status=on_status,
            )
            agent = self.resolve_agent(record)
            await agent(ctx)
            await ctx.finish("complete")
        except asyncio.CancelledError:
            reason = ev.CANCELLED if live.cancel_requested else ev.INTERRUPTED
        except Exception as err:
            reason = ev.FAILED
            if not live.lost:
                log.warning("run %s failed: %s", run_id, err)
                error = ev.event(ev.ERROR, run_id=run_id, code=type(err).__name__, message=str(err))
                failure.append(error)
        finally:
            live.task = None
            live.assistant_id = None
            live.waiters.clear()
            if not live.lost:
                # Still the session's active run until its end is written:
                # nothing else starts, or ends it, before that.
                await self._end_run(session_id, live, run_id, reason, first=failure)
            live.run_id = None
        if not live.lost:
            await self._next(session_id)

    async def _end_run(
        self,
        session_id: str,
        live: _Live,
        run_id: str,
        reason: str,
        first: list[ev.Event] | None = None,
    ) -> None:
        """End a run that ran here, trying again until its run-end is written.

        A run-end the store refuses (the disk is full, Redis is away) would
        leave the session ``running`` and its readers waiting for good, so it
        is tried again, with backoff, until it is written, another process
        drives the session (it ends the run), or this one shuts down (the
        run's record stays, and the next start ends it as interrupted).
        """
        delay = END_RETRY_DELAY
        failures = 0
        while not live.lost:
            # A failed attempt may have been written after all (a store that
            # timed out after it took the write): never end a run twice.
            if failures and await self._has_ended(session_id, run_id):
                break
            try:
                async with asyncio.timeout(END_ATTEMPT_TIMEOUT):
                    await self._end(session_id, live, run_id, reason, first=first)
                break
            except Exception as err:
                if not failures:
                    log.warning("could not end run %s (%s); will try again until it is written",
                                run_id, err)  # fmt: skip
                failures += 1
            if not self._closing:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    if not self._closing:
                        raise
            if self._closing:  # aclose cancels runs, this one too: it must not hang
                log.warning("run %s is left open at shutdown; the next start ends it", run_id)
                return
            delay = min(2 * delay, END_RETRY_MAX_DELAY)
        if failures:
            log.warning("run %s ended after %d failed attempts", run_id, failures)

    async def _has_ended(self, session_id: str, run_id: str) -> bool:
        """Whether the session's stream holds the run's run-end (False if it cannot tell)."""
        try:
            fold = (await self.sessions.state(session_id)).fold
        except Exception:
            return False
        return fold.runs.get(run_id, "running") != "running"

    async def _end(
        self,
        session_id: str,
        live: _Live,
        run_id: str,
        reason: str,
        then: list[ev.Event] | None = None,
        first: list[ev.Event] | None = None,
    ) -> None:
        """Append the run's one run-end, between ``first`` and ``then``, in one batch.

        Raises what the store raised if it refused the batch; the run's record
        stays then, so that the run is still ended, by a retry or the next driver.
        """
        try:
            await self._append(
                session_id,
                live,
                [
                    *(first or ()),
                    ev.event(ev.RUN_END, run_id=run_id, reason=reason),
                    ev.event(ev.STATUS, status=ev.IDLE),
                    *(then or ()),
                ],
            )
        except StreamNotFound:
            pass  # the session was deleted: nothing is left to end
        except LeaseLost:
            return  # whoever drives the session now ends the run
        try:
            await self.store.delete_record(RUNS, run_id)
        except Exception as err:  # the next reaper drops it: the run has ended
            log.warning("could not drop the record of ended run %s: %s", run_id, err)


def _resolve(live: _Live, key: str, value: Any) -> None:
    fut = live.waiters.get(key)
    if fut is None:
        fut = asyncio.get_running_loop().create_future()
        live.waiters[key] = fut
    if not fut.done():
        fut.set_result(value)


def _deliver_answers(live: _Live, fold: SessionFold) -> None:
    """Hand the run the tool results and approvals its stream holds."""
    msg = fold.messages.get(live.assistant_id or "")
    if msg is None:
        return
    for part in msg.parts:
        if part.tool_call_id is None:
            continue
        if part.approval is not None:
            verdict = Approval(bool(part.approval["approved"]), part.approval.get("reason"))
            _resolve(live, f"approval:{part.tool_call_id}", verdict)
        if part.result is not None or part.error is not None:
            _resolve(live, f"result:{part.tool_call_id}", ToolOutcome(part.result, part.error))


def _watched(chunk: bytes) -> bool:
    try:
        return orjson.loads(chunk).get("type") in _WATCHED
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _finished(fold: SessionFold | None, run_id: str, recorded_at: float) -> bool:
    """A ``runs`` record that no longer stands for work: its run ended, or never began."""
    if fold is None:
        return True  # the session is gone
    state = fold.runs.get(run_id)
    if state is not None:
        return state != "running"
    known = run_id in fold.submitted or any(q["run_id"] == run_id for q in fold.queue)
    return not known and time.time() - recorded_at > ORPHAN_RECORD_AGE


def _seeded_answer(message_id: str, parent_id: str | None, msg: dict[str, Any]) -> list[ev.Event]:
    """The events of a finished assistant message: its text, tool calls and their results."""
    out = [ev.event(ev.MESSAGE_START, message_id=message_id, role="assistant", parent_id=parent_id)]
    results: list[ev.Event] = []
    n = 0
    if msg.get("text"):
        n += 1
        part_id = f"{message_id}:{n}"
        out += [
            ev.event(ev.PART_START, message_id=message_id, part_id=part_id, kind=ev.TEXT),
            ev.event(ev.PART_DELTA, part_id=part_id, delta=msg["text"]),
            ev.event(ev.PART_END, part_id=part_id),
        ]
    for call in msg.get("tool_calls", ()):
        n += 1
        part_id = f"{message_id}:{n}"
        value = call.get("arguments")
        if isinstance(value, str):
            # Text that is not JSON stays as it is, as RunContext.tool_call does.
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        out += [
            ev.event(
                ev.PART_START, message_id=message_id, part_id=part_id, kind=ev.TOOL_CALL,
                tool_call_id=call["id"], tool_name=call["name"],
            ),
            ev.event(ev.PART_END, part_id=part_id, value={} if value is None else value),
        ]  # fmt: skip
        if call.get("result") is not None or call.get("error") is not None:
            results.append(
                ev.event(
                    ev.TOOL_RESULT, tool_call_id=call["id"], output=call.get("result"),
                    error=call.get("error"),
                )
            )  # fmt: skip
    out.append(ev.event(ev.MESSAGE_END, message_id=message_id, status="complete"))
    return out + results
