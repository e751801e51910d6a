"""Executing a run: its opening events, the agent in a task of its own, its one run-end.

Whatever happens inside a run (completion, cancel, an agent's exception,
shutdown), exactly one ``run-end`` is appended for it, by the session's
driver; a run whose driver lost the lease stops without one, and whoever
drives the session next ends it (tether.runtime.driver).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.runtime.context import Approval, RunContext, ToolOutcome
from tether.runtime.errors import run_error_code
from tether.runtime.names import RUNS, lease_name
from tether.runtime.queue import QueueItem, queue_update
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionRecord
from tether.store.errors import LeaseLost, StreamNotFound

if TYPE_CHECKING:
    from tether.runtime.driver import ContextFactory, SessionDriver

log = logging.getLogger(__name__)

#: Seconds before the first retry of a run-end the store refused (the disk was
#: full, Redis away); each retry waits twice as long, up to END_RETRY_MAX_DELAY.
END_RETRY_DELAY = 0.1
END_RETRY_MAX_DELAY = 2.0
#: Seconds one attempt to write a run-end may take before it counts as failed.
END_ATTEMPT_TIMEOUT = 10.0


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

    @property
    def run_id(self) -> str:
        return self.item.run_id

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
        """Hand the agent the tool results and approvals its stream holds."""
        msg = fold.messages.get(self.assistant_id or "")
        if msg is None:
            return
        for part in msg.parts:
            if part.tool_call_id is None:
                continue
            if part.approval is not None:
                verdict = Approval(bool(part.approval["approved"]), part.approval.get("reason"))
                self.resolve(f"approval:{part.tool_call_id}", verdict)
            if part.result is not None or part.error is not None:
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
    host = driver.host
    task = asyncio.create_task(
        _execute(driver, run, record, assistant_id), name=f"tether-run-{item.run_id}"
    )
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
    reason = ev.CANCELLED if run.cancel_requested else ev.INTERRUPTED

    async def end_it() -> None:
        if run.task is task:
            run.task = None
        if not driver.lost:
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


async def _execute(
    driver: SessionDriver, run: Run, record: SessionRecord, assistant_id: str
) -> None:
    run_id = run.run_id
    session_id = driver.session_id
    reason = ev.COMPLETE
    failure: list[ev.Event] = []  # the error event of a run that failed
    usage: dict[str, int] = {}  # what its message-end said it cost
    _note(driver, ev.RUNNING, touch=True)
    try:
        fold = await driver.fold()

        async def append(events: list[ev.Event]) -> int:
            if driver.lost:
                raise LeaseLost(lease_name(session_id))
            if run.cancel_requested:
                # Cancelled, yet still running: something under the agent
                # swallowed the cancel (asyncio.wait_for can, on 3.11).
                raise asyncio.CancelledError
            return await driver.append(events)

        async def on_status(status: str) -> None:
            await append([ev.event(ev.STATUS, status=status)])
            _note(driver, status)

        agent = driver.host.resolve_agent(record)
        make_context: ContextFactory = getattr(agent, "make_context", RunContext)
        ctx = make_context(
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
        )
        await agent(ctx)
        await ctx.finish("complete")
        usage = ctx.usage
    except asyncio.CancelledError:
        reason = ev.CANCELLED if run.cancel_requested else ev.INTERRUPTED
    except Exception as err:
        reason = ev.FAILED
        if not driver.lost:
            log.warning("run %s failed: %s", run_id, err)
            error = ev.event(ev.ERROR, run_id=run_id, code=run_error_code(err), message=str(err))
            failure.append(error)
    finally:
        run.task = None
        run.assistant_id = None
        run.waiters.clear()
        if not driver.lost:
            # Still the session's active run until its end is written:
            # nothing else starts, or ends it, before that.
            await end_run(driver, run_id, reason, first=failure, usage=usage)
        driver.finish_run(run)
    if not driver.lost:
        await driver.host.next(session_id)


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
    try:
        await driver.host.store.delete_record(RUNS, run_id)
    except Exception as err:  # the next reaper drops it: the run has ended
        log.warning("could not drop the record of ended run %s: %s", run_id, err)
    _note(driver, status, usage=usage, touch=True)
