"""Runs: executed in the server, one at a time per session, detached from clients.

The runtime owns every run task: it starts them, cancels them, and awaits them
on shutdown. Whatever happens inside a run (completion, cancel, an agent's
exception, shutdown), exactly one ``run-end`` is appended for it. A run's
record (namespace ``runs``) exists from its start to its end; records found
when the runtime starts belong to a process that died, and their runs are
ended as ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.runtime.context import Approval, RunContext, ToolOutcome
from tether.sessions import events as ev
from tether.sessions.service import SessionRecord, SessionService
from tether.store.errors import StreamNotFound

log = logging.getLogger(__name__)

RUNS = "runs"
Agent = Callable[[RunContext], Awaitable[None]]
AgentResolver = Callable[[SessionRecord], Agent]


class InvalidInput(ValueError):
    """A request that names a message or tool call the session does not have."""


class Conflict(ValueError):
    """A request that is valid but clashes with the session's state."""


@dataclass(slots=True)
class QueueItem:
    run_id: str
    kind: str  # "message" | "regenerate" | "continue"
    #: The user message to place (kind message), to answer again (regenerate),
    #: or the message the answer follows (continue).
    message_id: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    parent_id: str | None = None
    #: The parent was chosen (None then means a root); else it is the leaf at run time.
    explicit_parent: bool = False
    edit_of: str | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "kind": self.kind,
            "message_id": self.message_id,
        }
        if self.kind == "message":
            out["parts"] = self.parts
            if self.explicit_parent:
                out["parent_id"] = self.parent_id
            if self.edit_of is not None:
                out["edit_of"] = self.edit_of
        return out

    @classmethod
    def from_public(cls, d: dict[str, Any]) -> QueueItem:
        return cls(
            d["run_id"],
            d["kind"],
            d["message_id"],
            d.get("parts", []),
            d.get("parent_id"),
            explicit_parent="parent_id" in d,
            edit_of=d.get("edit_of"),
        )


@dataclass(slots=True)
class _Live:
    queue: deque[QueueItem] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    run_id: str | None = None
    cancel_requested: bool = False
    waiters: dict[str, asyncio.Future[Any]] = field(default_factory=dict)


class Runtime:
    def __init__(self, sessions: SessionService, resolve_agent: AgentResolver) -> None:
        self.sessions = sessions
        self.resolve_agent = resolve_agent
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._live: dict[str, _Live] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """End runs a dead process left open, then carry on with their queues.

        Only on a store this process owns alone: on a shared store (Redis) the
        runs may belong to live replicas, and telling dead from alive needs
        leases, which replicas do not keep yet.
        """
        if not self.sessions.store.exclusive:
            log.warning("shared store: runs left open by a crashed replica are not recovered here")
            return
        for run_id, raw in await self.sessions.store.list_records(RUNS):
            info = orjson.loads(raw)
            session_id = info["session_id"]
            log.warning(
                "run %s of session %s was left open; ending it as interrupted", run_id, session_id
            )
            try:
                await self.sessions.append(
                    session_id,
                    [
                        ev.event(ev.RUN_END, run_id=run_id, reason=ev.INTERRUPTED),
                        ev.event(ev.STATUS, status=ev.IDLE),
                    ],
                )
                state = await self.sessions.state(session_id)
                live = self._session(session_id)
                live.queue.extend(QueueItem.from_public(q) for q in state.fold.queue)
                await self._next(session_id)
            except Exception:
                log.exception("could not end interrupted run %s", run_id)
            await self.sessions.store.delete_record(RUNS, run_id)

    async def aclose(self) -> None:
        """Cancel every run (they end as interrupted) and wait for them."""
        self._closing = True
        tasks = [live.task for live in self._live.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    def _session(self, session_id: str) -> _Live:
        live = self._live.get(session_id)
        if live is None:
            live = self._live[session_id] = _Live()
        return live

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
        live = self._session(session_id)
        if live.run_id is not None or live.queue:
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
            await self.sessions.append(session_id, batch)
        return leaf

    async def _submit(self, session_id: str, item: QueueItem, interrupt: bool) -> bool:
        live = self._session(session_id)
        busy = live.run_id is not None
        if interrupt and busy:
            live.queue.appendleft(item)
            await self._publish_queue(session_id, live)
            await self.cancel(session_id, live.run_id)
            return True
        if busy or live.queue:
            live.queue.append(item)
            await self._publish_queue(session_id, live)
            await self._next(session_id)
            return True
        await self._begin(session_id, live, item)
        return False

    async def cancel(self, session_id: str, run_id: str | None = None) -> list[str]:
        """Stop the active run (and, with no run id, nothing else) within ~200 ms."""
        live = self._session(session_id)
        await self.sessions.append(
            session_id, [ev.event(ev.CANCEL, run_id=run_id, all=None if run_id else True)]
        )
        cancelled: list[str] = []
        dropped = [q.run_id for q in live.queue if run_id is None or q.run_id == run_id]
        if dropped:
            # A queued run never started, but it still ends exactly once.
            live.queue = deque(q for q in live.queue if q.run_id not in dropped)
            await self.sessions.append(
                session_id,
                [
                    ev.event(ev.QUEUE_UPDATE, queue=[q.public() for q in live.queue]),
                    *(ev.event(ev.RUN_END, run_id=r, reason=ev.CANCELLED) for r in dropped),
                ],
            )
            cancelled += dropped
        task = live.task
        if task is not None and (run_id is None or run_id == live.run_id):
            live.cancel_requested = True
            assert live.run_id is not None
            cancelled.append(live.run_id)
            task.cancel()
            await asyncio.wait((task,), timeout=0.2)
        return cancelled

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
        self._resolve(session_id, f"result:{tool_call_id}", ToolOutcome(output, error))

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
        self._resolve(session_id, f"approval:{tool_call_id}", Approval(approved, reason))

    def _resolve(self, session_id: str, key: str, value: Any) -> None:
        live = self._session(session_id)
        fut = live.waiters.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            live.waiters[key] = fut
        if not fut.done():
            fut.set_result(value)

    async def _publish_queue(self, session_id: str, live: _Live) -> None:
        await self.sessions.append(
            session_id, [ev.event(ev.QUEUE_UPDATE, queue=[q.public() for q in live.queue])]
        )

    # -- execution -------------------------------------------------------------

    async def _next(self, session_id: str) -> None:
        live = self._session(session_id)
        if live.run_id is None and live.queue and not self._closing:
            await self._begin(session_id, live, live.queue.popleft())

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
                live.run_id = None
            await self._end(session_id, item.run_id, reason)
            await self._next(session_id)

        cleanup = asyncio.ensure_future(end())
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _open(
        self, session_id: str, live: _Live, item: QueueItem
    ) -> tuple[SessionRecord, str]:
        record = await self.sessions.record(session_id)
        fold = (await self.sessions.state(session_id)).fold
        batch: list[ev.Event] = []
        if fold.queue or live.queue:
            batch.append(ev.event(ev.QUEUE_UPDATE, queue=[q.public() for q in live.queue]))
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
        assistant_id = ev.new_id("msg")
        await self.sessions.store.put_record(
            RUNS, item.run_id, orjson.dumps({"session_id": session_id, "worker": self.worker})
        )
        batch += [
            ev.event(
                ev.RUN_START, run_id=item.run_id, trigger=item.message_id,
                model=record.agent or record.model or "demo", worker=self.worker,
            ),
            ev.event(ev.STATUS, status=ev.RUNNING),
            ev.event(
                ev.MESSAGE_START, run_id=item.run_id, message_id=assistant_id, role="assistant",
                parent_id=item.message_id,
            ),
        ]  # fmt: skip
        await self.sessions.append(session_id, batch)
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
        try:
            state = await self.sessions.state(session_id)

            async def append(events: list[ev.Event]) -> int:
                return await self.sessions.append(session_id, events)

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
            log.warning("run %s failed: %s", run_id, err)
            with contextlib.suppress(Exception):
                await self.sessions.append(
                    session_id,
                    [ev.event(ev.ERROR, run_id=run_id, code=type(err).__name__, message=str(err))],
                )
        finally:
            live.task = None
            live.run_id = None
            live.waiters.clear()
            await self._end(session_id, run_id, reason)
        await self._next(session_id)

    async def forget(self, session_id: str) -> None:
        """Before a session is deleted: drop its queue and stop its run."""
        live = self._live.get(session_id)
        if live is None:
            return
        live.queue.clear()
        await self.cancel(session_id)
        self._live.pop(session_id, None)

    async def _end(self, session_id: str, run_id: str, reason: str) -> None:
        try:
            await self.sessions.append(
                session_id,
                [
                    ev.event(ev.RUN_END, run_id=run_id, reason=reason),
                    ev.event(ev.STATUS, status=ev.IDLE),
                ],
            )
        except StreamNotFound:
            pass  # the session was deleted: nothing is left to end
        except Exception:
            # The run record stays, so the next start ends the run as interrupted.
            log.exception("could not append run-end for %s", run_id)
            return
        await self.sessions.store.delete_record(RUNS, run_id)


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
