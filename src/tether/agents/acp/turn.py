"""One ``session/prompt`` as one tether run: ACP's ``session/update``s to session events.

- ``agent_message_chunk`` / ``agent_thought_chunk``: text / reasoning deltas;
- ``tool_call`` / ``tool_call_update``, merged by ``toolCallId``: a tool-call part
  whose three phases are the events a server tool has: open while the call is
  ``pending``; ended (its value the latest ``rawInput``) once it is
  ``in_progress``; then its ``tool-result`` with the run's id (the agent ran it,
  as the server runs its own tools): ``output`` ``{content, raw_output}`` when
  ``completed``, ``error`` when ``failed``;
- ``plan``: a ``plan`` part whose value is the entries (each plan replaces the last);
- ``usage_update``: ``context_tokens`` / ``context_window`` in the message's usage;
- ``session/request_permission``: a tool-call part that needs approval, its
  arguments the options; the answer selects an option (``option_id``, or the
  first allowing / rejecting one for a plain approve / refuse).

The prompt's stop reason ends the run: ``end_turn`` complete, ``cancelled``
cancelled; ``max_tokens``, ``max_turn_requests`` and ``refusal`` complete, with
the reason said in the message-end's ``stop_reason``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    AllowedOutcome,
    PermissionOption,
    PromptResponse,
    RequestPermissionResponse,
    ToolCallProgress,
    ToolCallStart,
    ToolCallUpdate,
    UsageUpdate,
)

from tether.agents.acp.client import cancelled
from tether.runtime.context import RunContext, ToolOutcome
from tether.sessions import events as ev

_FINISHED = ("completed", "failed")
_UNDER_WAY = ("in_progress", *_FINISHED)


@dataclass(slots=True)
class _Call:
    call_id: str
    part_id: str
    raw_input: Any = None
    content: list[Any] = field(default_factory=list)
    raw_output: Any = None
    #: Its part has ended: the call is under way (or finished).
    started: bool = False
    #: Its result is written.
    done: bool = False


@dataclass(slots=True)
class _Ask:
    tool_call: ToolCallUpdate
    options: list[PermissionOption]
    answer: asyncio.Future[RequestPermissionResponse]


class Turn:
    """Maps one prompt's updates onto ``ctx``, in the order the agent sent them."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._calls: dict[str, _Call] = {}
        self._asks: list[_Ask] = []
        self._waits: set[asyncio.Task[None]] = set()
        self._permissions = 0

    # -- fed by the process's connection -----------------------------------------------

    def take(self, update: Any) -> None:
        self._queue.put_nowait(update)

    async def ask(
        self, tool_call: ToolCallUpdate, options: list[PermissionOption]
    ) -> RequestPermissionResponse:
        asked = _Ask(tool_call, options, asyncio.get_running_loop().create_future())
        self._asks.append(asked)
        self._queue.put_nowait(asked)
        return await asked.answer

    def cancel_permissions(self) -> None:
        """A cancel answers every pending permission request ``cancelled`` (as ACP requires)."""
        for asked in self._asks:
            if not asked.answer.done():
                asked.answer.set_result(cancelled())

    async def close(self) -> None:
        """Stop waiting for approvals; their last events are written before the run ends."""
        self.cancel_permissions()
        for task in list(self._waits):
            task.cancel()
        await asyncio.gather(*self._waits, return_exceptions=True)

    # -- the run ---------------------------------------------------------------------------

    async def pump(self, asked: asyncio.Future[Any], exited: asyncio.Future[int]) -> None:
        """Write the updates until the prompt is answered (or the process is gone)."""
        while True:
            getting = asyncio.ensure_future(self._queue.get())
            try:
                done, _ = await asyncio.wait(
                    (getting, asked, exited), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if not getting.done():
                    getting.cancel()  # an update it was handed stays in the queue
            if getting not in done:
                break
            await self._apply(getting.result())
        while not self._queue.empty():  # what came with the answer
            await self._apply(self._queue.get_nowait())

    async def _apply(self, update: Any) -> None:
        ctx = self.ctx
        if isinstance(update, _Ask):
            await self._permission(update)
        elif isinstance(update, AgentMessageChunk):
            await ctx.text(_text(update.content))
        elif isinstance(update, AgentThoughtChunk):
            await ctx.reasoning(_text(update.content))
        elif isinstance(update, ToolCallStart | ToolCallProgress):
            await self._tool(update)
        elif isinstance(update, AgentPlanUpdate):
            entries = [e.model_dump(mode="json", exclude_none=True) for e in update.entries]
            await ctx.part(ev.PLAN, entries)
        elif isinstance(update, UsageUpdate):
            ctx.usage["context_tokens"] = update.used
            ctx.usage["context_window"] = update.size

    async def _tool(self, update: ToolCallStart | ToolCallProgress) -> None:
        call = self._calls.get(update.tool_call_id)
        if call is None:
            call_id = f"acp_{self.ctx.run_id}_{update.tool_call_id}"
            name = update.title or update.kind or "tool"
            part_id = await self.ctx.tool_call_start(call_id, name)
            call = self._calls[update.tool_call_id] = _Call(call_id, part_id)
        if call.done:
            return
        if update.raw_input is not None:
            call.raw_input = update.raw_input
        if update.content is not None:
            call.content = [c.model_dump(mode="json", exclude_none=True) for c in update.content]
        if update.raw_output is not None:
            call.raw_output = update.raw_output
        if update.status in _UNDER_WAY and not call.started:
            call.started = True
            await self.ctx.tool_call_end(call.part_id, call.raw_input or {})
        if update.status in _FINISHED:
            await self._end_call(call, failed=update.status == "failed")

    async def _end_call(self, call: _Call, *, failed: bool, why: str | None = None) -> None:
        call.done = True
        if not call.started:
            call.started = True
            await self.ctx.tool_call_end(call.part_id, call.raw_input or {})
        if failed:
            error = why or _content_text(call.content) or "the tool call failed"
            await self.ctx.tool_result(call.call_id, ToolOutcome(error=error))
        else:
            output = {"content": call.content, "raw_output": call.raw_output}
            await self.ctx.tool_result(call.call_id, ToolOutcome(output=output))

    async def _permission(self, asked: _Ask) -> None:
        self._permissions += 1
        tool = asked.tool_call
        call_id = f"acp_{self.ctx.run_id}_permission_{self._permissions}"
        name = tool.title or "permission"
        part_id = await self.ctx.tool_call_start(call_id, name, approval=True)
        options = [o.model_dump(mode="json", exclude_none=True) for o in asked.options]
        await self.ctx.tool_call_end(
            part_id, {"tool_call_id": tool.tool_call_id, "options": options}
        )
        task = asyncio.create_task(self._await_verdict(call_id, asked))
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)

    async def _await_verdict(self, call_id: str, asked: _Ask) -> None:
        verdict = await self.ctx.wait_approval(call_id)
        if not asked.answer.done():
            asked.answer.set_result(choose(asked.options, verdict.approved, verdict.option_id))

    async def finish(self, answer: PromptResponse) -> None:
        """The prompt's answer: close what is still open; a cancelled turn ends cancelled."""
        await self.close()
        for call in self._calls.values():
            if not call.done:
                await self._end_call(call, failed=True, why="the agent's turn ended first")
        if answer.stop_reason == "cancelled":
            raise asyncio.CancelledError
        if answer.usage is not None:
            u = answer.usage
            counts = {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "reasoning_tokens": u.thought_tokens,
                "cache_read_tokens": u.cached_read_tokens,
                "cache_write_tokens": u.cached_write_tokens,
            }
            await self.ctx.add_usage(**{k: n for k, n in counts.items() if n is not None})
        if answer.stop_reason != "end_turn":
            self.ctx.stop_reason = answer.stop_reason


def choose(
    options: list[PermissionOption], approved: bool, option_id: str | None
) -> RequestPermissionResponse:
    """The option an approval selects: the one named, else the first of its kind."""
    chosen = next((o for o in options if o.option_id == option_id), None)
    if chosen is None:
        kinds = ("allow_once", "allow_always") if approved else ("reject_once", "reject_always")
        chosen = next((o for k in kinds for o in options if o.kind == k), None)
    if chosen is None:
        return cancelled()
    return RequestPermissionResponse(
        outcome=AllowedOutcome(outcome="selected", option_id=chosen.option_id)
    )


def _text(block: Any) -> str:
    text = getattr(block, "text", None)
    return text if isinstance(text, str) else ""


def _content_text(content: list[Any]) -> str:
    texts = [c.get("content", {}).get("text", "") for c in content if c.get("type") == "content"]
    return "\n".join(t for t in texts if t)
