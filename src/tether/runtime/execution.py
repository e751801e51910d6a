"""Executing a run: its opening events, the agent in a task of its own, its one run-end.

Whatever happens inside a run (completion, cancel, an agent's exception),
exactly one ``run-end`` is appended for it, by the session's driver. A run
may also stop without ending, to go on later under the same id from its
journal (tether.runtime.journal):

- *suspended*: every step of it waits on a person; its task stops and the
  waits are recorded (``run-suspend``) until an answer continues it;
- *stopped*: the process shuts down, or lost the session's lease; whoever
  drives the session next continues it (:func:`resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tether.observability import tracing
from tether.observability.runs import LEDGER
from tether.runtime.context import Approval, RunContext, ToolOutcome
from tether.runtime.errors import run_error_code
from tether.runtime.journal import Resumption
from tether.runtime.names import CLAIM_TTL, EXPIRING, RUNS, claim_name, lease_name
from tether.runtime.queue import QueueItem, queue_update
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold, part_number
from tether.sessions.service import SessionRecord
from tether.store.errors import LeaseLost, StreamNotFound

if TYPE_CHECKING:
    from tether.runtime.driver import ContextFactory, Drivers, SessionDriver

log = logging.getLogger(__name__)

#: Seconds before the first retry of a run-end the store refused (the disk was
#: full, Redis away); each retry waits twice as long, up to END_RETRY_MAX_DELAY.
END_RETRY_DELAY = 0.1
END_RETRY_MAX_DELAY = 2.0
#: Seconds one attempt to write a run-end may take before it counts as failed.
END_ATTEMPT_TIMEOUT = 10.0

#: Why the runtime halts a run (Run.halted): it only waits on a person, or the
#: process shuts down.
SUSPEND: Final = "suspend"
STOP: Final = "stop"


@dataclass(slots=True, eq=False)
class Run:
    """A run this process executes, from its opening events until its run-end is written."""

    item: QueueItem
    #: Executes the agent; None once the agent is done (its end is being written).
    task: asyncio.Task[None] | None = None
    #: The answer's message, while the agent writes it.
    assistant_id: str | None = None
    #: A client cancelled the run: it ends as cancelled, not interrupted.
    cancel_requested: bool = False
    #: Futures the agent awaits (``result:{call}``, ``approval:{call}``).
    waiters: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    #: Why the runtime stopped the agent without ending the run: SUSPEND or STOP.
    halted: str | None = None
    #: What the run waited for when it was halted (what its suspension records).
    halted_waits: dict[str, float | None] = field(default_factory=dict)
    #: The agent's context, once made.
    ctx: RunContext | None = None
    #: Suspends the run if it still only waits (armed when a wait begins).
    _timer: asyncio.TimerHandle | None = None

    @property
    def run_id(self) -> str:
        return self.item.run_id

    def cancelled_reason(self) -> str | None:
        """Why the agent's task was cancelled: a client (cancelled), the runtime halting
        it (None: the run goes on later), or anything else (interrupted)."""
        if self.cancel_requested:
            return ev.CANCELLED
        return None if self.halted else ev.INTERRUPTED

    def halt(self, why: str) -> None:
        """Stop the agent without ending the run: it goes on later from its journal."""
        if self.task is not None and not self.cancel_requested and self.halted is None:
            self.halted = why
            if self.ctx is not None:  # the waits unwind as the task is cancelled
                self.halted_waits = dict(self.ctx.waits)
            self.task.cancel()

    def waiting(self, suspend_after: float) -> None:
        """A wait began: suspend the run if, ``suspend_after`` seconds on, it only waits."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(suspend_after, self.suspend_if_idle)

    def suspend_if_idle(self) -> None:
        self._timer = None
        if self.ctx is not None and self.ctx.quiescent:
            self.halt(SUSPEND)

    def cancel(self) -> None:
        """Stop the agent because a client asked: the run ends as cancelled."""
        if self.task is not None:
            self.cancel_requested = True
            self.task.cancel()

    def stop(self) -> None:
        """Stop the agent because the lease is lost (unless the agent is what noticed)."""
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def resolve(self, key: str, value: Any) -> None:
        """Hand the agent an answer it awaits under ``key`` (or will await)."""
        fut = self.waiters.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[key] = fut
        if not fut.done():
            fut.set_result(value)

    def deliver_answers(self, fold: SessionFold) -> None:
        """Hand the agent the tool results, approvals and client answers its stream holds."""
        for rid, req in fold.client_requests.items():
            if req["answered"] and req.get("run_id") == self.run_id:
                self.resolve(f"request:{rid}", answer_of(req))
        msg = fold.messages.get(self.assistant_id or "")
        if msg is None:
            return
        for part in msg.parts:
            if part.tool_call_id is None:
                continue
            if part.approval is not None:
                verdict = Approval(
                    bool(part.approval["approved"]),
                    part.approval.get("reason"),
                    part.approval.get("option_id"),
                )
                self.resolve(f"approval:{part.tool_call_id}", verdict)
            if part.answered:
                self.resolve(f"result:{part.tool_call_id}", ToolOutcome(part.result, part.error))


async def begin(driver: SessionDriver, item: QueueItem) -> None:
    """Place the run's opening events, then execute it in a task of its own.

    The opening is appended before the caller is answered, so a snapshot
    taken right after ``send`` already shows the message and its run.
    """
    run = Run(item)
    driver.start_run(run)
    try:
        record, assistant_id = await _open(driver, run)
    except BaseException:
        driver.finish_run(run)
        raise
    _spawn(driver, run, _execute(driver, run, record, assistant_id))


async def resume(driver: SessionDriver, left_open: dict[str, Any], fold: SessionFold) -> None:
    """Continue a run left open (suspended, or stopped), under its id, from its journal.

    What a cut attempt streamed after the last journaled step is discarded
    (a ``retry`` event after the ``run-resume`` that says who goes on; retries
    are numbered afresh after it), and the agent runs again with the journal,
    replaying what was done.
    """
    run_id = left_open["run_id"]
    msg = fold.answer_of(run_id)
    item = QueueItem(run_id, "continue", left_open.get("trigger") or "")
    run = Run(item)
    driver.start_run(run)
    try:
        if msg is None:  # stopped before its message was placed: nothing to continue
            raise LookupError(f"run {run_id} has no message to continue")
        resumption = Resumption.of(fold, run_id)
        record = await driver.host.sessions.record(driver.session_id)
        replayed = len(resumption.entries)
        batch = [
            ev.event(ev.RUN_RESUME, run_id=run_id, worker=driver.host.worker, replayed=replayed)
        ]
        cut = [p.id for p in msg.parts if part_number(p.id) > resumption.watermark]
        if cut:  # what a cut attempt streamed after the last completed step
            batch.append(
                ev.event(
                    ev.RETRY, run_id=run_id, attempt=1, delay_ms=0,
                    error="the run was cut; it continues from its last completed step",
                    discard=cut,
                )
            )  # fmt: skip
        batch.append(ev.event(ev.STATUS, status=ev.RUNNING))
        await driver.append(batch)
    except BaseException:
        driver.finish_run(run)
        raise
    model = left_open.get("model") or "unknown"
    LEDGER.adopted(run_id, driver.session_id, model, record.owner, left_open.get("started_at"))
    log.info("run %s of session %s continues here, replaying %d step(s)",
             run_id, driver.session_id, replayed)  # fmt: skip
    run.assistant_id = msg.id
    run.deliver_answers(fold)
    _spawn(driver, run, _execute(driver, run, record, msg.id, resumption))


def _spawn(driver: SessionDriver, run: Run, work: Coroutine[Any, Any, None]) -> None:
    host = driver.host
    task = asyncio.create_task(work, name=f"tether-run-{run.run_id}")
    run.task = task
    host.runs.add(task)
    task.add_done_callback(host.runs.discard)
    task.add_done_callback(lambda t: _unstarted(t, driver, run))


def _unstarted(task: asyncio.Task[None], driver: SessionDriver, run: Run) -> None:
    """A task cancelled before its first step never runs ``_execute``: end its run here.

    (``_execute`` catches its own cancellation, so a task that ran always ends
    normally; only one cancelled before it started ends up cancelled.)
    """
    if not task.cancelled():
        return
    reason = run.cancelled_reason()

    async def end_it() -> None:
        if run.task is task:
            run.task = None
        if not driver.lost and reason is not None:
            await end_run(driver, run.run_id, reason)
        driver.finish_run(run)
        if not driver.lost:
            await driver.host.next(driver.session_id)

    driver.host.own(end_it())


async def _open(driver: SessionDriver, run: Run) -> tuple[SessionRecord, str]:
    item = run.item
    host = driver.host
    record = await host.sessions.record(driver.session_id)
    fold = await driver.fold()
    batch: list[ev.Event] = []
    if fold.queue or driver.queue:
        batch.append(queue_update(driver.queue))
    if item.kind == "message":
        batch.append(
            ev.event(
                ev.USER_MESSAGE,
                message_id=item.message_id,
                parent_id=item.parent_id if item.explicit_parent else fold.leaf,
                parts=item.parts,
                edit_of=item.edit_of,
                tools=item.tools or None,
            )
        )
    assistant_id = run.assistant_id = ev.new_id("msg")
    batch += [
        ev.event(
            ev.RUN_START, run_id=item.run_id, trigger=item.message_id,
            model=record.agent or record.model or "demo", worker=host.worker,
            retry_of=item.retry_of,
        ),
        ev.event(ev.STATUS, status=ev.RUNNING),
        ev.event(
            ev.MESSAGE_START, run_id=item.run_id, message_id=assistant_id, role="assistant",
            parent_id=item.message_id,
        ),
    ]  # fmt: skip
    await driver.append(batch)
    LEDGER.started(
        item.run_id, driver.session_id, record.agent or record.model or "demo", record.owner
    )
    return record, assistant_id


def _note(
    driver: SessionDriver,
    status: str,
    *,
    usage: dict[str, int] | None = None,
    touch: bool = False,
) -> None:
    """Keep the session's status (and usage totals) on its record, for listings.

    Written in the background, after the session's earlier notes: a record
    write is a commit, and none of them may stand between a message and its
    first token, or between a tool's result and the next model call. The log
    is the truth and has it already: a record the store refuses is logged
    and left stale rather than failing the run. The host awaits every note
    before it stops (``own``).
    """
    host, session_id = driver.host, driver.session_id
    previous = host.notes.get(session_id)

    async def write() -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await host.sessions.note_run(session_id, status, usage=usage, touch=touch)
        except Exception as err:
            log.warning("could not note run status %s on session %s: %s",
                        status, session_id, err)  # fmt: skip

    task = asyncio.ensure_future(write())
    host.notes[session_id] = task
    task.add_done_callback(
        lambda t: host.notes.pop(session_id, None) if host.notes.get(session_id) is t else None
    )
    host.own(task)


def _run_info(
    driver: SessionDriver,
    run: Run,
    record: SessionRecord,
    assistant_id: str,
    resumption: Resumption | None = None,
) -> tracing.RunInfo:
    """What the run's span says of it (tether.observability.tracing)."""
    model = None if record.agent else record.model or "demo"
    return tracing.RunInfo(
        driver.session_id, run.run_id, record.agent, model, continued=resumption is not None
    )


@tracing.traced_run(_run_info)
async def _execute(
    driver: SessionDriver,
    run: Run,
    record: SessionRecord,
    assistant_id: str,
    resumption: Resumption | None = None,
) -> None:
    run_id = run.run_id
    session_id = driver.session_id
    host = driver.host
    reason: str | None = ev.COMPLETE  # None: the run stops without ending (halted)
    failure: list[ev.Event] = []  # the error event of a run that failed
    usage: dict[str, int] = {}  # what its message-end said it cost
    _note(driver, ev.RUNNING, touch=True)
    try:
        fold = await driver.fold()

        async def append(events: list[ev.Event]) -> int:
            if driver.lost:
                raise LeaseLost(lease_name(session_id))
            if run.cancel_requested or run.halted:
                # Cancelled, yet still running: something under the agent
                # swallowed the cancel (asyncio.wait_for can, on 3.11).
                raise asyncio.CancelledError
            return await driver.append(events)

        async def on_status(status: str) -> None:
            await append([ev.event(ev.STATUS, status=status)])
            _note(driver, status)

        agent = host.resolve_agent(record)
        on_wait, on_step = _halting(run, host, bool(getattr(agent, "replay", True)))

        make_context: ContextFactory = getattr(agent, "make_context", RunContext)
        ctx = run.ctx = make_context(
            session_id=session_id,
            run_id=run_id,
            message_id=assistant_id,
            model_name=record.model,
            system=record.system,
            history=fold.branch(run.item.message_id),
            tools=[*record.tools, *_message_tools(fold, run.item.message_id)],
            append=append,
            waiters=run.waiters,
            on_status=on_status,
            on_wait=on_wait,
            on_step=on_step,
            resumption=resumption,
            wait_expiry=host.policy.wait_expiry,
            expire_request=_request_expiry(driver, run, append),
        )
        await agent(ctx)
        ctx.journal.finished()
        await ctx.finish("complete")
        usage = ctx.usage
    except asyncio.CancelledError:
        reason = run.cancelled_reason()
    except Exception as err:
        reason = ev.FAILED
        if not driver.lost:
            log.warning("run %s failed: %s", run_id, err)
            error = ev.event(ev.ERROR, run_id=run_id, code=run_error_code(err), message=str(err))
            failure.append(error)
    finally:
        run.task = None
        run.assistant_id = None
        run.ctx = None
        run.waiters.clear()
        if not driver.lost:
            # Still the session's active run until its end is written:
            # nothing else starts, or ends it, before that.
            await _conclude(driver, run, reason, failure, usage)
        driver.finish_run(run)
        LEDGER.left(run_id)  # halted, or the lease lost: its end is not ours to count
    if not driver.lost:
        if reason is None:
            await driver.reconcile()  # an answer that came meanwhile continues it at once
        await host.next(session_id)


def _request_expiry(
    driver: SessionDriver, run: Run, append: Callable[[list[ev.Event]], Coroutine[Any, Any, int]]
) -> Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]:
    """The context's hook for a timed client request whose deadline passed: the run
    writes the timeout ``error`` as its answer, under the answer's claim (as a client's
    answer is written), unless an answer came first; that one is then the run's."""
    store = driver.host.store

    async def expire(request_id: str, error: dict[str, Any]) -> None:
        key = f"request:{request_id}"
        name, holder = claim_name(driver.session_id, key), os.urandom(8).hex()
        if not await store.acquire_lease(name, holder, CLAIM_TTL):
            return  # a client's answer is being written: it reaches the run as any answer
        try:
            req = (await driver.fold()).client_requests.get(request_id)
            if req is not None and req["answered"]:
                run.resolve(key, answer_of(req))
                return
            answer = ev.event(
                ev.CLIENT_RESPONSE, run_id=run.run_id, request_id=request_id, error=error
            )
            await append([answer])
            run.resolve(key, {"error": error})
        finally:
            with contextlib.suppress(Exception):  # else it lapses; the log has the answer
                await store.release_lease(name, holder)

    return expire


def _halting(
    run: Run, host: Drivers, replays: bool
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The context's hooks that halt the run: when it only waits (suspend it),
    and when it would start a step while the server shuts down (stop it there).
    An agent that cannot replay is never halted: it could not be continued."""

    def on_wait() -> None:
        if replays:
            run.waiting(0.0 if host.closing else host.policy.suspend_after)

    def on_step() -> None:
        if host.closing and replays:
            run.halted = STOP
            raise asyncio.CancelledError  # no new step: the next start goes on from here

    return on_wait, on_step


async def _conclude(
    driver: SessionDriver,
    run: Run,
    reason: str | None,
    failure: list[ev.Event],
    usage: dict[str, int],
) -> None:
    """End the run (``reason``), or, halted, suspend it or leave it for whoever goes on."""
    tracing.run_ended(reason, run.halted, failure[0] if failure else None, usage)
    if reason is not None:
        await end_run(driver, run.run_id, reason, first=failure, usage=usage)
    elif run.halted == SUSPEND and run.halted_waits:
        await suspend(driver, run.run_id, run.halted_waits)
    else:
        log.info("run %s of session %s stopped here; it continues from its journal on "
                 "the next start or another replica", run.run_id, driver.session_id)  # fmt: skip


async def suspend(driver: SessionDriver, run_id: str, waits: dict[str, float | None]) -> None:
    """Record that the run waits on a person and holds nothing else meanwhile.

    Its record in ``runs`` goes (the reaper has nothing to do for it); waits
    that expire are indexed by when, for the keeper. If the store refuses,
    the run is left open with its record: whoever drives next continues it,
    and it is suspended again.
    """
    waiting = []
    for key, expires_at in waits.items():
        kind, _, call_id = key.partition(":")
        named = "request_id" if kind == "request" else "tool_call_id"
        wait: dict[str, Any] = {named: call_id, "for": kind}
        if expires_at is not None:
            wait["expires_at"] = expires_at
        waiting.append(wait)
    store = driver.host.store
    try:
        await driver.append([ev.event(ev.RUN_SUSPEND, run_id=run_id, waiting=waiting)])
        await store.delete_record(RUNS, run_id)
        expiry = min((t for t in waits.values() if t is not None), default=None)
        if expiry is not None:
            await store.index_put(EXPIRING, f"{driver.session_id} {run_id}", f"{expiry:017.3f}")
    except Exception as err:
        log.warning("could not suspend run %s (%s); it is left to continue", run_id, err)
        return
    LEDGER.suspended(run_id)
    log.info("run %s of session %s is suspended: it waits for %s",
             run_id, driver.session_id, ", ".join(waits))  # fmt: skip


def answer_of(request: dict[str, Any]) -> dict[str, Any]:
    """An answered request of the fold as the answer its waiter gets."""
    if "error" in request:
        return {"error": request["error"]}
    return {"result": request.get("result")}


def _message_tools(fold: SessionFold, message_id: str) -> list[Any]:
    """The tools declared with the message a run answers."""
    msg = fold.messages.get(message_id)
    return msg.tools if msg is not None else []


async def end_run(
    driver: SessionDriver,
    run_id: str,
    reason: str,
    first: list[ev.Event] | None = None,
    usage: dict[str, int] | None = None,
) -> None:
    """End a run that ran here, trying again until its run-end is written.

    A run-end the store refuses (the disk is full, Redis is away) would
    leave the session ``running`` and its readers waiting for good, so it
    is tried again, with backoff, until it is written, another process
    drives the session (it ends the run), or this one shuts down (the
    run's record stays, and the next start ends it as interrupted).
    """
    host = driver.host
    delay = END_RETRY_DELAY
    failures = 0
    while not driver.lost:
        # A failed attempt may have been written after all (a store that
        # timed out after it took the write): never end a run twice.
        if failures and await _has_ended(driver, run_id):
            break
        try:
            async with asyncio.timeout(END_ATTEMPT_TIMEOUT):
                await end(driver, run_id, reason, first=first, usage=usage)
            break
        except Exception as err:
            if not failures:
                log.warning("could not end run %s (%s); will try again until it is written",
                            run_id, err)  # fmt: skip
            failures += 1
        if not host.closing:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if not host.closing:
                    raise
        if host.closing:  # aclose cancels runs, this one too: it must not hang
            log.warning("run %s is left open at shutdown; the next start ends it", run_id)
            return
        delay = min(2 * delay, END_RETRY_MAX_DELAY)
    if failures:
        log.warning("run %s ended after %d failed attempts", run_id, failures)


async def _has_ended(driver: SessionDriver, run_id: str) -> bool:
    """Whether the session's stream holds the run's run-end (False if it cannot tell)."""
    try:
        fold = await driver.fold()
    except Exception:
        return False
    return fold.runs.get(run_id, "running") != "running"


async def end(
    driver: SessionDriver,
    run_id: str,
    reason: str,
    then: list[ev.Event] | None = None,
    first: list[ev.Event] | None = None,
    usage: dict[str, int] | None = None,
) -> None:
    """Append the run's one run-end, between ``first`` and ``then``, in one batch.

    Then the session's record takes the status and the run's ``usage`` (the
    counts of its message-end). Raises what the store raised if it refused
    the batch; the run's record stays then, so that the run is still ended,
    by a retry or the next driver.
    """
    status = ev.ERRORED if reason == ev.FAILED else ev.IDLE
    try:
        await driver.append(
            [
                *(first or ()),
                ev.event(ev.RUN_END, run_id=run_id, reason=reason),
                ev.event(ev.STATUS, status=status),
                *(then or ()),
            ]
        )
    except StreamNotFound:
        pass  # the session was deleted: nothing is left to end
    except LeaseLost:
        return  # whoever drives the session now ends the run
    else:
        LEDGER.ended(run_id, driver.session_id, reason, usage)
    try:
        await driver.host.store.delete_record(RUNS, run_id)
    except Exception as err:  # the next reaper drops it: the run has ended
        log.warning("could not drop the record of ended run %s: %s", run_id, err)
    _note(driver, status, usage=usage, touch=True)
