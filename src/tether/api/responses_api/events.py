"""A response's run, read from its session's events, as the Responses API: pure, no I/O.

:class:`ResponseTranslator` turns the events of one run into the Responses
API's typed stream events (``response.created`` ... ``response.completed``),
each with its ``sequence_number``, and keeps the ``response`` object they
describe (the non-streamed answer, and ``GET /v1/responses/{id}``).

A session continued by ``previous_response_id`` holds several runs; the
translator reads only the events of its own run, so reading the session from
its start or from the run's start gives the same events with the same
numbers. That is what makes ``starting_after=N`` exact: a reader that resumes
reads the run again and writes only the events numbered after ``N``.
"""

from __future__ import annotations

from typing import Any

import orjson

from tether.agents.gateway import GatewaySpec
from tether.api.openai.errors import OpenAIError, run_error
from tether.api.responses_api.request import Settings, response_id
from tether.sessions import events as ev

#: What a run's end makes of the response: (status, stream event type).
_ENDINGS = {
    ev.COMPLETE: ("completed", "response.completed"),
    ev.FAILED: ("failed", "response.failed"),
    ev.INTERRUPTED: ("failed", "response.failed"),
    ev.CANCELLED: ("cancelled", "response.incomplete"),
}
_ITEM_PREFIX = {ev.TEXT: "msg", ev.REASONING: "rs", ev.TOOL_CALL: "fc"}


def item_id(kind: str, part_id: str) -> str:
    """An output item's id, from its part's (the same on every read)."""
    return f"{_ITEM_PREFIX[kind]}_{part_id.removeprefix('msg_').replace(':', '_')}"


def sse(event: dict[str, Any]) -> bytes:
    """One typed event as an SSE frame."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Item:
    """One output item: a message (a text part), a reasoning item or a function call."""

    __slots__ = ("arguments", "call_id", "done", "id", "index", "kind", "name", "pieces")

    def __init__(self, index: int, kind: str, part: dict[str, Any]) -> None:
        self.index = index
        self.kind = kind
        self.id = item_id(kind, part["part_id"])
        self.pieces: list[str] = []
        self.done = False
        self.call_id = str(part.get("tool_call_id") or "")
        self.name = str(part.get("tool_name") or "")
        self.arguments: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def part(self) -> dict[str, Any]:
        """The content part of a message, or the summary part of a reasoning item."""
        if self.kind == ev.TEXT:
            return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        return {"type": "summary_text", "text": self.text}

    def json(self) -> dict[str, Any]:
        status = "completed" if self.done else "in_progress"
        if self.kind == ev.TEXT:
            content = [self.part()] if self.done or self.pieces else []
            return {
                "id": self.id, "type": "message", "status": status, "role": "assistant",
                "content": content,
            }  # fmt: skip
        if self.kind == ev.REASONING:
            summary = [self.part()] if self.done or self.pieces else []
            return {"id": self.id, "type": "reasoning", "status": status, "summary": summary}
        arguments = self.arguments if self.arguments is not None else self.text
        return {
            "id": self.id, "type": "function_call", "status": status, "call_id": self.call_id,
            "name": self.name, "arguments": arguments,
        }  # fmt: skip


class ResponseTranslator:
    """One run's events -> the Responses API's stream events and ``response`` object.

    Deterministic: the same events give the same stream events, numbered from
    0. Events of other runs (and seeded history) are skipped. With
    ``starting_after=N``, :meth:`frame` writes only the events numbered after
    ``N`` (the translator still reads the ones before, to be in their state).
    """

    def __init__(
        self,
        spec: GatewaySpec,
        settings: Settings,
        session_id: str,
        run_id: str,
        *,
        frames: bool = True,
        starting_after: int = -1,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.id = response_id(session_id, run_id)
        self.run_id = run_id
        #: Whether :meth:`frame` writes SSE (not for a response answered whole).
        self.frames = frames
        self.starting_after = starting_after
        self.sequence = 0
        self.created_at = 0
        self.started = False
        self.message_id: str | None = None
        self.items: list[_Item] = []
        self._parts: dict[str, _Item] = {}
        self.usage: dict[str, int] | None = None
        #: The run's error event: ``{"code", "message"}``.
        self.error: dict[str, str] | None = None
        #: The run-end's reason, once it has been seen.
        self.ended: str | None = None
        #: Whether the run-end has been seen (an attribute: the relay reads it per event).
        self.finished = False

    # -- events in -------------------------------------------------------------------

    def apply(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one session event; return the stream events it makes (numbered)."""
        if e.get("run_id") != self.run_id or self.finished:
            return []
        kind = e.get("type")
        out: list[dict[str, Any]] = []
        if kind == ev.RUN_START:
            self.created_at = int(e.get("ts") or 0)
            self._begin(out)
        elif kind == ev.MESSAGE_START and self.message_id is None:
            self.message_id = e.get("message_id")
        elif kind == ev.PART_START and e.get("message_id") == self.message_id:
            self._part_start(e, out)
        elif kind == ev.PART_DELTA and (item := self._parts.get(e["part_id"])) is not None:
            self._delta(item, e.get("delta", ""), out)
        elif kind == ev.PART_END and (item := self._parts.get(e["part_id"])) is not None:
            self._part_end(item, e, out)
        elif kind == ev.MESSAGE_END and e.get("message_id") == self.message_id:
            self.usage = e.get("usage") or None
        elif kind == ev.ERROR:
            self.error = {
                "code": str(e.get("code") or "server_error"),
                "message": str(e.get("message") or "the run failed"),
            }
        elif kind == ev.RUN_END:
            self._end(e.get("reason", ev.COMPLETE), out)
        return out

    def _emit(self, out: list[dict[str, Any]], kind: str, **fields: Any) -> None:
        out.append({"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1

    def _begin(self, out: list[dict[str, Any]]) -> None:
        self.started = True
        self._emit(out, "response.created", response=self.response())
        self._emit(out, "response.in_progress", response=self.response())

    def _part_start(self, e: dict[str, Any], out: list[dict[str, Any]]) -> None:
        kind = e.get("kind")
        if kind not in _ITEM_PREFIX:
            return
        item = _Item(len(self.items), kind, e)
        self.items.append(item)
        self._parts[e["part_id"]] = item
        where = {"item_id": item.id, "output_index": item.index}
        self._emit(out, "response.output_item.added", output_index=item.index, item=item.json())
        if kind == ev.TEXT:
            self._emit(out, "response.content_part.added", **where, content_index=0,
                       part=item.part())  # fmt: skip
        elif kind == ev.REASONING:
            self._emit(out, "response.reasoning_summary_part.added", **where, summary_index=0,
                       part=item.part())  # fmt: skip

    def _delta(self, item: _Item, delta: str, out: list[dict[str, Any]]) -> None:
        if item.done or not delta:
            return
        item.pieces.append(delta)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == ev.TEXT:
            self._emit(out, "response.output_text.delta", **where, content_index=0, delta=delta,
                       logprobs=[])  # fmt: skip
        elif item.kind == ev.REASONING:
            self._emit(out, "response.reasoning_summary_text.delta", **where, summary_index=0,
                       delta=delta)  # fmt: skip
        else:
            self._emit(out, "response.function_call_arguments.delta", **where, delta=delta)

    def _part_end(self, item: _Item, e: dict[str, Any], out: list[dict[str, Any]]) -> None:
        if item.done:
            return
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == ev.TOOL_CALL:
            value = e.get("value")
            arguments = value if isinstance(value, str) else orjson.dumps(value).decode()
            if value is None:
                arguments = item.text or "{}"
            if not item.pieces:  # placed whole: its arguments as one delta
                self._delta(item, arguments, out)
            item.arguments = arguments
            item.done = True
            self._emit(out, "response.function_call_arguments.done", **where, name=item.name,
                       arguments=arguments)  # fmt: skip
        elif item.kind == ev.TEXT:
            item.done = True
            self._emit(out, "response.output_text.done", **where, content_index=0,
                       text=item.text, logprobs=[])  # fmt: skip
            self._emit(out, "response.content_part.done", **where, content_index=0,
                       part=item.part())  # fmt: skip
        else:
            item.done = True
            self._emit(out, "response.reasoning_summary_text.done", **where, summary_index=0,
                       text=item.text)  # fmt: skip
            self._emit(out, "response.reasoning_summary_part.done", **where, summary_index=0,
                       part=item.part())  # fmt: skip
        self._emit(out, "response.output_item.done", output_index=item.index, item=item.json())

    def _end(self, reason: str, out: list[dict[str, Any]]) -> None:
        if not self.started:  # a queued run cancelled before it started
            self._begin(out)
        self.ended = reason
        self.finished = True
        kind = _ENDINGS.get(reason, _ENDINGS[ev.FAILED])[1]
        self._emit(out, kind, response=self.response())

    # -- the relay's translator ------------------------------------------------------

    def frame(self, position: int, event: bytes) -> bytes:
        """The SSE frames of the stream events ``event`` makes, past ``starting_after``."""
        made = self.apply(orjson.loads(event))
        if not made or not self.frames:
            return b""
        after = self.starting_after
        return b"".join(sse(m) for m in made if m["sequence_number"] > after)

    def last(self) -> bytes:
        """Nothing: a Responses stream ends with its terminal event."""
        return b""

    # -- the response object ---------------------------------------------------------

    @property
    def status(self) -> str:
        if self.ended is not None:
            return _ENDINGS.get(self.ended, _ENDINGS[ev.FAILED])[0]
        return "in_progress" if self.started else "queued"

    @property
    def output_text(self) -> str:
        return "".join(i.text for i in self.items if i.kind == ev.TEXT)

    def http_error(self) -> OpenAIError | None:
        """The error a run that failed is answered with (HTTP, or the response's ``error``)."""
        if self.ended == ev.FAILED:
            error = self.error or {}
            return run_error(error.get("code"), error.get("message") or "the run failed")
        if self.ended == ev.INTERRUPTED:
            return OpenAIError(
                503, "the run was interrupted", type="server_error", code="run_interrupted"
            )
        return None

    @property
    def failure(self) -> dict[str, Any] | None:
        """The response's ``error`` (``{"code", "message"}``) once it failed."""
        err = self.http_error()
        if err is None:
            return None
        return {"code": err.body["code"] or "server_error", "message": err.body["message"]}

    def usage_json(self) -> dict[str, Any] | None:
        if self.ended != ev.COMPLETE:
            return None
        usage = self.usage or {}
        inputs, outputs = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        return {
            "input_tokens": inputs,
            "input_tokens_details": {
                "cached_tokens": usage.get("cache_read_tokens", 0),
                "cache_write_tokens": usage.get("cache_write_tokens", 0),
            },
            "output_tokens": outputs,
            "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
            "total_tokens": inputs + outputs,
        }

    def response(self) -> dict[str, Any]:
        """The ``response`` object as the events read so far make it."""
        spec, settings = self.spec, self.settings
        options = spec.options
        incomplete = {"reason": "cancelled"} if self.ended == ev.CANCELLED else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "error": self.failure,
            "incomplete_details": incomplete,
            "instructions": settings.instructions,
            "max_output_tokens": settings.max_output_tokens,
            "metadata": settings.metadata,
            "model": spec.model,
            "output": [i.json() for i in self.items],
            "parallel_tool_calls": options.get("parallel_tool_calls", True),
            "previous_response_id": settings.previous_response_id,
            "reasoning": settings.reasoning,
            "store": settings.store,
            "temperature": options.get("temperature"),
            "text": settings.text,
            "tool_choice": _tool_choice(spec.tool_choice),
            "tools": [
                {
                    "type": "function",
                    "name": t["name"],
                    "description": t.get("description") or None,
                    "parameters": t.get("parameters"),
                    "strict": settings.strict.get(t["name"], True),
                }
                for t in spec.tools
            ],
            "top_p": options.get("top_p"),
            "truncation": "disabled",
            "usage": self.usage_json(),
            "user": None,
        }


def _tool_choice(choice: str | dict[str, Any] | None) -> Any:
    """``tool_choice`` as the Responses API echoes it (from the upstream's form)."""
    if isinstance(choice, dict):
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice or "auto"
