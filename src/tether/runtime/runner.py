"""Runs: executed in the server, one at a time per session, detached from clients.

:class:`Runtime` is what the fronts call: the inputs (send, edit,
regenerate, answer, seed, cancel, tool results and approvals), checked
against the session's fold and handed to the session's driver, here or, when
another replica drives the session, through the session's stream. It owns
every run task: it starts them through the drivers, cancels them, and awaits
them on shutdown. Whatever happens inside a run (completion, cancel, an
agent's exception, shutdown), exactly one ``run-end`` is appended for it.

The rest of the runtime, one idea per module:

- ``driver``: a session's driver, its states (free, driving, running, lost)
  and what it does with its lease, queue and stream;
- ``execution``: a run from its opening events to its one run-end, and how it
  stops without ending (suspended, or stopped at shutdown) to go on later;
- ``journal``: the steps a run recorded, replayed when it goes on;
- ``keeper``: lease renewal, the reaper that takes over dead drivers'
  sessions, and the expiry of suspended runs' waits;
- ``policy``: the terms of suspension, expiry and shutdown;
- ``seeding``: earlier turns placed without a run;
- ``queue``, ``names``, ``errors``, ``tasks``: what those share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from tether.runtime import client_requests as rpc
from tether.runtime.context import Approval, ToolOutcome
from tether.runtime.driver import (
    LEASE_TTL,
    Agent,
    AgentResolver,
    Dispatch,
    Drivers,
    SessionDriver,
)
from tether.runtime.errors import Conflict, InvalidInput, UnknownRequest
from tether.runtime.execution import STOP, SUSPEND, begin
from tether.runtime.keeper import REAP_INTERVAL, LeaseKeeper
from tether.runtime.names import CLAIM_TTL, RUNS, claim_name, lease_name
from tether.runtime.policy import RunPolicy
from tether.runtime.queue import QueueItem
from tether.runtime.seeding import seed
from tether.runtime.tasks import cancel_and_wait
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionService
from tether.store.errors import LeaseLost

__all__ = [
    "LEASE_TTL",
    "REAP_INTERVAL",
    "RUNS",
    "Agent",
    "AgentResolver",
    "Conflict",
    "InvalidInput",
    "QueueItem",
    "RunPolicy",
    "Runtime",
    "UnknownRequest",
    "lease_name",
]

log = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        sessions: SessionService,
        resolve_agent: AgentResolver,
        *,
        lease_ttl: float = LEASE_TTL,
        reap_interval: float = REAP_INTERVAL,
        retry_lost_runs: bool = False,
        policy: RunPolicy | None = None,
        dispatch: Dispatch | None = None,
        worker: str | None = None,
        reap: bool = True,
    ) -> None:
        """``dispatch``: where sessions of agents served elsewhere go (the server's
        tether.runtime.dispatch); ``worker``: this process's name as a lease holder;
        ``reap``: False in a tether worker, which only keeps its own leases."""
        self.sessions = sessions
        self._drivers = Drivers(
            sessions, resolve_agent, lease_ttl=lease_ttl, retry_lost_runs=retry_lost_runs,
            policy=policy, dispatch=dispatch, worker=worker,
        )  # fmt: skip
        self._drivers.retakes = reap
        #: When a shutdown's grace ends (loop time), once :meth:`drain` was called.
        self._deadline: float | None = None
        self._keeper = LeaseKeeper(self._drivers, reap_interval, reap=reap)
        #: This process's name as a lease holder, and in ``run-start`` events.
        self.worker = self._drivers.worker

    @property
    def retry_lost_runs(self) -> bool:
        """A run whose process died is answered again (once), not only ended as interrupted."""
        return self._drivers.retry_lost_runs

    @retry_lost_runs.setter
    def retry_lost_runs(self, value: bool) -> None:
        self._drivers.retry_lost_runs = value

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Take over what dead processes left (runs open, queues), then keep leases.

        On a shared store this goes on in the background: leases are renewed,
        and sessions whose driver died are taken over.
        """
        await self._keeper.start()

    def drain(self) -> None:
        """Start shutting down (SIGTERM): start nothing new; runs get the grace period.

        A run that only waits on a person is suspended now; running steps (a
        model call, a tool) may finish until :meth:`aclose` stops what is left.
        """
        drivers = self._drivers
        if drivers.closing:
            return
        drivers.closing = True
        self._deadline = asyncio.get_running_loop().time() + drivers.policy.shutdown_grace
        for driver in drivers:
            run = driver.run
            if run is not None and run.ctx is not None and run.ctx.quiescent:
                run.halt(SUSPEND)

    async def aclose(self) -> None:
        """Let running steps finish within the grace, stop the rest, let leases go.

        No run is ended by a shutdown: a stopped run is left open with its
        journal, and the next start (or, on a shared store, another replica
        at once) continues it.
        """
        drivers = self._drivers
        self.drain()
        await self._keeper.aclose()
        tasks = list(drivers.runs)
        if tasks:
            left = max(0.0, (self._deadline or 0.0) - asyncio.get_running_loop().time())
            log.info("shutting down: %d run(s) get %.1f s to finish their steps", len(tasks), left)
            _, pending = await asyncio.wait(tasks, timeout=left)
            for driver in drivers:
                run = driver.run
                if run is not None and run.task in pending:
                    run.halt(STOP)
            await cancel_and_wait(list(pending))
        await drivers.settle()
        for driver in drivers:
            if driver.driving:
                await driver.idle()

    def active_runs(self) -> int:
        return self._drivers.active_runs()

    def sessions_driven(self) -> int:
        """Sessions whose lease this process holds (a run active, queued, or waiting)."""
        return self._drivers.driven()

    async def until_idle(self) -> None:
        """Return once :meth:`sessions_driven` is 0, as soon as the last lease is let go."""
        await self._drivers.until_none_driven()

    async def take_over(self, session_id: str) -> bool:
        """Drive the session here if nobody does, and go on with its work (what a
        tether worker does with a session dispatched to it); whether it drives it."""
        if await self._drivers.drive(session_id) is None:
            return False
        await self._drivers.next(session_id)
        return True

    # -- inputs ----------------------------------------------------------------

    async def send(
        self,
        session_id: str,
        parts: list[dict[str, Any]],
        *,
        parent_id: str | None = None,
        interrupt: bool = False,
        edit_of: str | None = None,
        tools: list[Any] | None = None,
    ) -> tuple[str, str, bool]:
        """Place a user message and answer it, now or after the runs before it.

        ``tools`` are declared for this message's run (checked by the caller).
        """
        fold = await self._fold(session_id)
        if parent_id is not None and parent_id not in fold.messages:
            raise InvalidInput(f"no message {parent_id} in this session")
        item = QueueItem(
            ev.new_id("run"), "message", ev.new_id("msg"), parts, parent_id,
            explicit_parent=parent_id is not None, edit_of=edit_of, tools=tools or [],
        )  # fmt: skip
        queued = await self._submit(session_id, item, interrupt)
        return item.message_id, item.run_id, queued

    async def edit(
        self,
        session_id: str,
        message_id: str,
        parts: list[dict[str, Any]],
        *,
        tools: list[Any] | None = None,
    ) -> tuple[str, str, bool]:
        """A new version of a user message: a sibling branch, answered afresh.

        It keeps the old version's tools unless ``tools`` are given.
        """
        old = (await self._fold(session_id)).messages.get(message_id)
        if old is None:
            raise InvalidInput(f"no message {message_id} in this session")
        if old.role != "user":
            raise InvalidInput("only user messages can be edited")
        item = QueueItem(
            ev.new_id("run"), "message", ev.new_id("msg"), parts, old.parent_id,
            explicit_parent=True, edit_of=message_id,
            tools=old.tools if tools is None else tools,
        )  # fmt: skip
        queued = await self._submit(session_id, item, False)
        return item.message_id, item.run_id, queued

    async def regenerate(self, session_id: str, message_id: str) -> tuple[str, bool]:
        """Answer again: a new assistant message beside the old one."""
        msg = (await self._fold(session_id)).messages.get(message_id)
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
        if message_id not in (await self._fold(session_id)).messages:
            raise InvalidInput(f"no message {message_id} in this session")
        item = QueueItem(ev.new_id("run"), "continue", message_id)
        queued = await self._submit(session_id, item, False)
        return item.run_id, queued

    async def seed(self, session_id: str, messages: list[dict[str, Any]]) -> str | None:
        """Place earlier turns of a conversation after the leaf, running nothing.

        For clients that hold the conversation themselves (the OpenAI-compatible
        gateway); see :func:`tether.runtime.seeding.seed` for the items. The
        events go in one atomic batch. Returns the new leaf's id (the old one
        if ``messages`` is empty). Conflict while a run is active or queued.
        """
        return await seed(self._drivers, session_id, messages)

    async def cancel(self, session_id: str, run_id: str | None = None) -> list[str]:
        """Stop the active run and drop queued ones (all, or the one named).

        Returns the runs that were running or queued. The run stops within
        ~200 ms here, and as fast when another replica runs it: its driver acts
        on the ``cancel`` event as soon as the event reaches it.
        """
        fold = await self._fold(session_id)
        targets = [q["run_id"] for q, _ in fold.pending() if run_id in (None, q["run_id"])]
        driver = self._drivers.find(session_id)
        run = driver.run if driver is not None and driver.driving else None
        active = run.run_id if run is not None else (fold.active_run or {}).get("run_id")
        if active is not None and run_id in (None, active) and active not in targets:
            targets.append(active)
        await self.sessions.append(
            session_id, [ev.event(ev.CANCEL, run_id=run_id, all=None if run_id else True)]
        )
        driver = await self._drivers.drive(session_id)
        if driver is not None:
            await driver.reconcile()
            run = driver.run
            if run is not None and run.task is not None and run.cancel_requested:
                await asyncio.wait((run.task,), timeout=0.2)
            await self._drivers.next(session_id)
        return targets

    def run_task(self, session_id: str, run_id: str) -> asyncio.Task[None] | None:
        """The task executing run ``run_id``, if it executes in this process."""
        driver = self._drivers.find(session_id)
        run = driver.run if driver is not None else None
        if run is None or run.run_id != run_id:
            return None
        return run.task

    async def tool_result(
        self, session_id: str, tool_call_id: str, output: Any = None, error: str | None = None
    ) -> None:
        answer = ev.event(ev.TOOL_RESULT, tool_call_id=tool_call_id, output=output, error=error)
        await self._answer(session_id, f"result:{tool_call_id}", answer, ToolOutcome(output, error))

    async def tool_approval(
        self,
        session_id: str,
        tool_call_id: str,
        approved: bool,
        reason: str | None = None,
        option_id: str | None = None,
    ) -> None:
        answer = ev.event(
            ev.TOOL_APPROVAL, tool_call_id=tool_call_id, approved=approved, reason=reason,
            option_id=option_id,
        )  # fmt: skip
        await self._answer(
            session_id, f"approval:{tool_call_id}", answer, Approval(approved, reason, option_id)
        )

    async def client_response(
        self, session_id: str, request_id: str, answer: dict[str, Any]
    ) -> None:
        """Answer client request ``request_id``, once: ``answer`` is ``{"result": ...}``
        or ``{"error": {code, message, data?}}`` (checked against a typed method's terms)."""
        req = (await self._fold(session_id)).client_requests.get(request_id)
        if req is None:
            raise UnknownRequest(f"no client request {request_id} in this session")
        problem = (
            rpc.error_problem(answer["error"])
            if "error" in answer
            else rpc.result_problem(req["method"], req.get("params"), answer.get("result"))
        )
        if problem is not None:
            raise InvalidInput(problem)
        event = ev.event(ev.CLIENT_RESPONSE, request_id=request_id, **answer)
        if "result" in answer and answer["result"] is None:
            event.pop("result", None)  # a result of null: the event has neither field
        await self._answer(session_id, f"request:{request_id}", event, answer)

    async def _answer(self, session_id: str, key: str, answer: ev.Event, value: Any) -> None:
        """Write one answer to a tool call, once: of answers racing on any replicas,
        exactly one is written (it holds the question's claim); the others get Conflict.

        The answer goes to the run waiting for it: here, on the replica that
        drives the session, or, for a suspended run, whichever takes it on.
        """
        call_id = answer.get("tool_call_id") or answer["request_id"]
        self._check_unanswered(await self._fold(session_id), key, call_id)
        claim, holder = claim_name(session_id, key), os.urandom(8).hex()
        if not await self.sessions.store.acquire_lease(claim, holder, CLAIM_TTL):
            raise Conflict(f"{call_id} is being answered by another request")
        try:
            fold = await self._fold(session_id)  # an answer may have landed before the claim
            self._check_unanswered(fold, key, call_id)
            suspended = None if self._runs_here(session_id) else fold.active_run
            if suspended is not None:  # so that a reaper continues it if we die after the append
                await self._drivers.record(suspended["run_id"], session_id)
            await self.sessions.append(session_id, [answer])
            if suspended is not None:  # again: the run's own suspension may have dropped it
                await self._drivers.record(suspended["run_id"], session_id)
        finally:
            with contextlib.suppress(Exception):  # else it lapses; the log has the answer
                await self.sessions.store.release_lease(claim, holder)
        if not self._deliver(session_id, key, value):
            driver = await self._drivers.drive(session_id)
            if driver is not None:
                await driver.reconcile()  # continues a suspended run
                await self._drivers.next(session_id)

    @staticmethod
    def _check_unanswered(fold: SessionFold, key: str, call_id: str) -> None:
        if key.startswith("request:"):
            req = fold.client_requests.get(call_id)
            if req is None:
                raise UnknownRequest(f"no client request {call_id} in this session")
            if req["answered"]:
                raise Conflict(f"client request {call_id} was already answered")
            run_id = req.get("run_id")
            if run_id is not None and fold.runs.get(run_id) != "running":
                raise Conflict(f"the run that made client request {call_id} has ended")
            return
        part = fold.tool_call(call_id)
        if part is None:
            raise InvalidInput(f"no tool call {call_id} in this session")
        if key.startswith("approval:") and part.approval is not None:
            raise Conflict(f"tool call {call_id} was already answered")
        if key.startswith("result:") and part.answered:
            raise Conflict(f"tool call {call_id} already has a result")

    def _runs_here(self, session_id: str) -> bool:
        driver = self._drivers.find(session_id)
        return driver is not None and driver.driving and driver.run is not None

    async def forget(self, session_id: str) -> None:
        """Before a session is deleted: drop its queue and stop its run.

        A run on another replica stops when that replica sees the stream go.
        """
        driver = self._drivers.find(session_id)
        if driver is None or not driver.driving:
            return
        await self.cancel(session_id)  # a cancel of everything: queued runs end too
        self._drivers.drop(session_id)

    # -- handing inputs to the driver --------------------------------------------

    async def _fold(self, session_id: str) -> SessionFold:
        """The session's fold, caught up with its stream (to check an input against)."""
        return (await self.sessions.state(session_id)).fold

    def _deliver(self, session_id: str, key: str, value: Any) -> bool:
        """Hand an answer to the run waiting for it, if it runs here (else its driver
        finds the answer in the stream); whether it did."""
        driver = self._drivers.find(session_id)
        run = driver.run if driver is not None and driver.driving else None
        if run is None or run.task is None or run.halted:
            return False
        run.resolve(key, value)
        return True

    async def _submit(self, session_id: str, item: QueueItem, interrupt: bool) -> bool:
        await self._drivers.record(item.run_id, session_id)
        driver = await self._drivers.drive(session_id)
        if driver is not None:
            with contextlib.suppress(LeaseLost):  # taken over before the item was written
                return await self._submit_here(driver, item, interrupt)
        return await self._hand_over(session_id, item, interrupt)

    async def _submit_here(self, driver: SessionDriver, item: QueueItem, interrupt: bool) -> bool:
        """Queue or start ``item`` as the driver; LeaseLost means nothing was written."""
        run = driver.run
        if interrupt and run is not None:
            await driver.enqueue(item, front=True)
            await self.cancel(driver.session_id, run.run_id)
            return True
        # A run may be open in the log with no task: suspended, waiting on a person.
        suspended = (await driver.fold()).active_run if run is None else None
        if interrupt and suspended is not None:
            await driver.enqueue(item, front=True)
            await self.cancel(driver.session_id, suspended["run_id"])
            return True
        if run is not None or driver.queue or suspended is not None:
            await driver.enqueue(item, front=False)
            await self._drivers.next(driver.session_id)
            return True
        await begin(driver, item)
        return False

    async def _hand_over(self, session_id: str, item: QueueItem, interrupt: bool) -> bool:
        """Another process drives the session: give it the item through the stream."""
        batch = [ev.event(ev.SUBMIT, **item.public(), front=interrupt or None)]
        if interrupt:
            active = (await self._fold(session_id)).active_run
            if active is not None:
                batch.append(ev.event(ev.CANCEL, run_id=active["run_id"]))
        await self.sessions.append(session_id, batch)
        # The driver may have let the session go before the submit landed.
        if await self._drivers.drive(session_id) is not None:
            await self._drivers.next(session_id)
        return True
