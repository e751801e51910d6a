"""A run's session events as the AI SDK's UI message stream: pure translation, no I/O.

:class:`RunTranslator` turns one run's events into UI message chunks;
:class:`UIFrames` is the relay's translator, writing them as SSE and ending
with ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from tether.sessions import events as ev

DONE = b"data: [DONE]\n\n"

Chunk = dict[str, Any]


class RunTranslator:
    """Turns one run's session events into UI message stream chunks.

    Fed every event of the session from before the run starts (or from its
    ``run-start``); events of other runs are ignored. ``done`` is set at the
    run's end (or when the run is cancelled before it started).

    Steps: the run opens one; a part that starts after a tool call of the
    current step was answered opens the next (the model is being called
    again). Parts a ``retry`` discards are ended where they stand: the UI
    stream cannot take back what it sent, so the client keeps a failed
    attempt's partial output (the session's fold drops it).
    """

    def __init__(self, run_id: str, session_id: str) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.started = False
        self.done = False
        self._open: dict[str, str] = {}  # part id -> text | reasoning
        self._tools: dict[str, tuple[str, str, bool]] = {}  # part id -> (call id, name, approval)
        self._calls: set[str] = set()
        self._answered_in_step = False
        self._errored = False

    def feed(self, e: ev.Event) -> list[Chunk]:
        if self.done:
            return []
        kind = e.get("type")
        if kind in (ev.TOOL_RESULT, ev.TOOL_APPROVAL):
            return self._tool_input(e) if e.get("tool_call_id") in self._calls else []
        if e.get("run_id") != self.run_id:
            return []
        if not self.started:
            return self._before_start(kind, e)
        if kind == ev.PART_START:
            return self._part_start(e)
        if kind == ev.PART_DELTA:
            return self._part_delta(e)
        if kind == ev.PART_END:
            return self._part_end(e)
        if kind == ev.RETRY:
            discard = set(e.get("discard") or ())
            return self._close(p for p in list(self._open) if p in discard)
        if kind == ev.ERROR:
            self._errored = True
            text = str(e.get("message") or e.get("code") or "the run failed")
            return [*self._close(list(self._open)), {"type": "error", "errorText": text}]
        if kind == ev.RUN_END:
            return self._end(e.get("reason", ev.COMPLETE))
        return []

    def _before_start(self, kind: Any, e: ev.Event) -> list[Chunk]:
        """The run's events before its answer begins: only its start or its cancel show."""
        if kind == ev.MESSAGE_START:
            self.started = True
            meta = {"tether": {"sessionId": self.session_id, "runId": self.run_id}}
            return [
                {"type": "start", "messageId": e["message_id"], "messageMetadata": meta},
                {"type": "start-step"},
            ]
        if kind == ev.CANCEL:
            # Taken off the queue before it began: there will be no run-start.
            self.done = True
            return [{"type": "start"}, {"type": "abort", "reason": ev.CANCELLED}]
        return []

    def _part_start(self, e: ev.Event) -> list[Chunk]:
        out: list[Chunk] = []
        pkind = e.get("kind")
        if pkind not in (ev.TEXT, ev.REASONING, ev.TOOL_CALL):
            return out
        if self._answered_in_step:
            out += self._close(list(self._open))
            out += [{"type": "finish-step"}, {"type": "start-step"}]
            self._answered_in_step = False
        part_id = e["part_id"]
        if pkind == ev.TOOL_CALL:
            call_id, name = e.get("tool_call_id") or part_id, e.get("tool_name") or "tool"
            self._tools[part_id] = (call_id, name, bool(e.get("needs_approval")))
            self._calls.add(call_id)
            out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
        else:
            self._open[part_id] = pkind
            out.append({"type": f"{pkind}-start", "id": part_id})
        return out

    def _part_delta(self, e: ev.Event) -> list[Chunk]:
        part_id, delta = e["part_id"], e.get("delta")
        if not delta:
            return []
        pkind = self._open.get(part_id)
        if pkind is not None:
            return [{"type": f"{pkind}-delta", "id": part_id, "delta": delta}]
        tool = self._tools.get(part_id)
        if tool is not None:  # a piece of a tool call's arguments
            return [{"type": "tool-input-delta", "toolCallId": tool[0], "inputTextDelta": delta}]
        return []

    def _part_end(self, e: ev.Event) -> list[Chunk]:
        part_id = e["part_id"]
        if part_id in self._open:
            return self._close([part_id])
        tool = self._tools.pop(part_id, None)
        if tool is None:
            return []
        call_id, name, approval = tool
        out: list[Chunk] = [
            {
                "type": "tool-input-available",
                "toolCallId": call_id,
                "toolName": name,
                "input": e.get("value"),
            }
        ]
        if approval:
            out.append(
                {"type": "tool-approval-request", "approvalId": call_id, "toolCallId": call_id}
            )
        return out

    def _tool_input(self, e: ev.Event) -> list[Chunk]:
        call_id = e["tool_call_id"]
        if e["type"] == ev.TOOL_APPROVAL:
            if e.get("approved"):
                return []
            self._answered_in_step = True
            return [{"type": "tool-output-denied", "toolCallId": call_id}]
        self._answered_in_step = True
        if e.get("error") is not None:
            return [{"type": "tool-output-error", "toolCallId": call_id, "errorText": e["error"]}]
        return [{"type": "tool-output-available", "toolCallId": call_id, "output": e.get("output")}]

    def _close(self, part_ids: Iterable[str]) -> list[Chunk]:
        return [{"type": f"{self._open.pop(p)}-end", "id": p} for p in part_ids]

    def _end(self, reason: str) -> list[Chunk]:
        self.done = True
        out = self._close(list(self._open))
        out.append({"type": "finish-step"})
        if reason == ev.COMPLETE:
            out.append({"type": "finish", "finishReason": "stop"})
        elif reason == ev.CANCELLED:
            out.append({"type": "abort", "reason": ev.CANCELLED})
        else:
            if not self._errored:
                out.append(
                    {"type": "error", "errorText": f"the run was {reason}: the server stopped"}
                )
            out.append({"type": "finish", "finishReason": "error"})
        return out


def _sse(chunk: Chunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class UIFrames:
    """The relay's translator for the AI SDK: one run's UI message stream, then [DONE]."""

    def __init__(self, run: RunTranslator, run_started: Callable[[int], None]) -> None:
        self.run = run
        #: Told the position of the run's run-start when it goes by.
        self.run_started = run_started

    @property
    def finished(self) -> bool:
        return self.run.done

    def frame(self, position: int, event: bytes) -> bytes:
        e = orjson.loads(event)
        if e.get("type") == ev.RUN_START and e.get("run_id") == self.run.run_id:
            self.run_started(position - 1)
        chunks = self.run.feed(e)
        return b"".join([_sse(c) for c in chunks]) if chunks else b""

    def last(self) -> bytes:
        return DONE
