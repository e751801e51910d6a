"""A gateway session's events as Anthropic's answer: pure translation, no I/O.

:class:`MessageMapper` turns the events of a message's run into the Messages
API's stream events (``message_start``, ``content_block_start`` /
``content_block_delta`` / ``content_block_stop``, ``message_delta``,
``message_stop``, and ``error`` for a run that failed) and, whole, into the
``message`` object. As the relay's translator it writes them as SSE frames,
``event: <type>``, ``data: <json>``; the last frame a session event makes
carries ``id:``, the stream offset after that event, so a client that lost the
stream resumes from the last id it saw with nothing twice.

Blocks: a text part is a ``text`` block; a reasoning part a ``thinking`` block
whose signature (its part-end's ``signature``) comes as a ``signature_delta``
before the block stops, or a ``redacted_thinking`` block (its part-end's
``redacted``); a tool call a ``tool_use`` block whose arguments come as
``input_json_delta`` pieces.
"""

from __future__ import annotations

from typing import Any

import orjson

from tether.api.anthropic_api.errors import error_body
from tether.api.openai.errors import OpenAIError, run_error
from tether.sessions import events as ev
from tether.streams.wire import format_offset

#: The ``ping`` Anthropic sends after ``message_start`` (clients ignore it).
_PING = {"type": "ping"}


def message_id(run_id: str) -> str:
    """The message id of a run: the same for every read of it."""
    return "msg_" + run_id.removeprefix("run_")


class _Block:
    """A content block being streamed (a part of the run's message)."""

    __slots__ = ("index", "kind", "started", "streamed", "value")

    def __init__(self, kind: str, value: dict[str, Any]) -> None:
        self.kind = kind
        #: Its index in the message's content, once its ``content_block_start`` is out.
        self.index = -1
        self.started = False
        #: The block as the whole message has it (text, thinking, input...).
        self.value = value
        #: Whether pieces of it have been streamed (a tool call's arguments may not be).
        self.streamed = False


class MessageMapper:
    """A gateway session's events -> Anthropic's stream events, deterministically.

    The same events give the same outputs, so a reader that replays a run's
    events up to an offset is in exactly the state a reader that streamed them
    was in. Only the session's first run after ``start`` counts; seeded history
    carries no run id and is skipped.
    """

    def __init__(self, model: str, *, max_tokens: int | None = None, frames: bool = True) -> None:
        #: The model as the client named it (echoed).
        self.model = model
        #: The request's ``max_tokens``: an answer of that many tokens stopped there.
        self.max_tokens = max_tokens
        #: Whether :meth:`frame` writes SSE (not for a message answered whole).
        self.frames = frames
        self.run_id: str | None = None
        self.message: str | None = None
        self._blocks: dict[str, _Block] = {}
        #: The message's content blocks, in order.
        self.content: list[dict[str, Any]] = []
        self.usage: dict[str, int] = {}
        self.error: OpenAIError | None = None
        self.ended: str | None = None
        #: Whether the run-end has been seen (an attribute: the relay reads it per event).
        self.finished = False

    # -- what the answer says ---------------------------------------------------

    @property
    def stop_reason(self) -> str:
        if any(b["type"] == "tool_use" for b in self.content):
            return "tool_use"
        if self.max_tokens is not None and self.usage.get("output_tokens", 0) >= self.max_tokens:
            return "max_tokens"
        return "end_turn"

    @property
    def usage_json(self) -> dict[str, int]:
        """Anthropic's usage: ``input_tokens`` without the cached parts, which come apart."""
        read = self.usage.get("cache_read_tokens", 0)
        written = self.usage.get("cache_write_tokens", 0)
        return {
            "input_tokens": max(self.usage.get("input_tokens", 0) - read - written, 0),
            "output_tokens": self.usage.get("output_tokens", 0),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }

    @property
    def ok(self) -> bool:
        return self.ended == ev.COMPLETE and self.error is None

    def whole(self) -> dict[str, Any]:
        """The ``message`` object of a run that ended well."""
        return {
            "id": message_id(self.run_id or ""),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage_json,
        }

    # -- events in, stream events out ------------------------------------------------

    def apply(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one session event; return the stream events it makes (often none)."""
        kind = e.get("type")
        if kind == ev.RUN_START and self.run_id is None:
            self.run_id = e["run_id"]
            return []
        if self.run_id is None or e.get("run_id") != self.run_id or self.ended is not None:
            return []
        if kind == ev.MESSAGE_START and self.message is None:
            self.message = e["message_id"]
            start = {**self.whole(), "content": [], "stop_reason": None}
            start["usage"] = {"input_tokens": 0, "output_tokens": 0}
            return [{"type": "message_start", "message": start}, _PING]
        if kind == ev.PART_START and e.get("message_id") == self.message:
            return self._part_start(e)
        if kind == ev.PART_DELTA:
            block = self._blocks.get(e["part_id"])
            return self._delta(block, e.get("delta", "")) if block is not None else []
        if kind == ev.PART_END:
            block = self._blocks.pop(e["part_id"], None)
            return self._part_end(block, e) if block is not None else []
        if kind == ev.MESSAGE_END and e.get("message_id") == self.message:
            self.usage = dict(e.get("usage") or {})
            delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
            return [{"type": "message_delta", "delta": delta, "usage": self.usage_json}]
        if kind == ev.ERROR:
            self.error = run_error(e.get("code"), e.get("message") or "the run failed")
            return [error_body(self.error)]
        if kind == ev.RUN_END:
            return self._run_end(e)
        return []

    def _part_start(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        kind = e.get("kind", ev.TEXT)
        if kind == ev.TEXT:
            block = _Block(kind, {"type": "text", "text": ""})
        elif kind == ev.REASONING:
            block = _Block(kind, {"type": "thinking", "thinking": "", "signature": ""})
        elif kind == ev.TOOL_CALL:
            value = {
                "type": "tool_use",
                "id": e.get("tool_call_id", ""),
                "name": e.get("tool_name", ""),
                "input": {},
            }
            block = _Block(kind, value)
        else:
            return []
        self._blocks[e["part_id"]] = block
        # A reasoning part may turn out redacted: its block starts with its first delta.
        return [] if kind == ev.REASONING else [self._start(block)]

    def _start(self, block: _Block) -> dict[str, Any]:
        block.started = True
        block.index = len(self.content)
        self.content.append(block.value)
        opening = dict(block.value)
        if block.kind == ev.TEXT:
            opening["text"] = ""
        return {"type": "content_block_start", "index": block.index, "content_block": opening}

    def _delta(self, block: _Block, delta: str) -> list[dict[str, Any]]:
        out = [] if block.started else [self._start(block)]
        if block.kind == ev.TEXT:
            block.value["text"] += delta
            piece = {"type": "text_delta", "text": delta}
        elif block.kind == ev.REASONING:
            block.value["thinking"] += delta
            piece = {"type": "thinking_delta", "thinking": delta}
        else:
            piece = {"type": "input_json_delta", "partial_json": delta}
        block.streamed = True
        out.append({"type": "content_block_delta", "index": block.index, "delta": piece})
        return out

    def _part_end(self, block: _Block, e: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if block.kind == ev.REASONING and isinstance(e.get("redacted"), str):
            block.kind, block.value = (
                "redacted",
                {"type": "redacted_thinking", "data": e["redacted"]},
            )
        if not block.started:
            out.append(self._start(block))
        if block.kind == ev.REASONING and isinstance(e.get("signature"), str):
            block.value["signature"] = e["signature"]
            piece = {"type": "signature_delta", "signature": e["signature"]}
            out.append({"type": "content_block_delta", "index": block.index, "delta": piece})
        elif block.kind == ev.TOOL_CALL:
            value = e.get("value")
            block.value["input"] = value if isinstance(value, dict) else {}
            if not block.streamed:  # placed whole: its arguments in one piece
                whole = orjson.dumps(block.value["input"]).decode()
                piece = {"type": "input_json_delta", "partial_json": whole}
                out.append({"type": "content_block_delta", "index": block.index, "delta": piece})
        out.append({"type": "content_block_stop", "index": block.index})
        return out

    def _run_end(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        self.ended = e.get("reason", ev.COMPLETE)
        self.finished = True
        if self.ended == ev.COMPLETE:
            return [] if self.error is not None else [{"type": "message_stop"}]
        if self.error is None:
            self.error = OpenAIError(
                500 if self.ended == ev.CANCELLED else 503,
                f"the run was {self.ended}",
                type="server_error",
                code=f"run_{self.ended}",
            )
            return [error_body(self.error)]
        return []

    # -- the relay's translator ----------------------------------------------------

    def frame(self, position: int, event: bytes) -> bytes:
        """The SSE frames of what ``event`` makes; the last one's ``id:`` is ``position``.

        Only the last: a client's last id then always names a whole event's
        frames, so resuming from it repeats nothing and misses nothing.
        """
        out = self.apply(orjson.loads(event))
        if not out or not self.frames:
            return b""
        last = len(out) - 1
        offset = b"id: " + format_offset(position).encode() + b"\n"
        return b"".join(
            b"event: " + o["type"].encode() + b"\n" + (offset if i == last else b"")
            + b"data: " + orjson.dumps(o) + b"\n\n"
            for i, o in enumerate(out)
        )  # fmt: skip

    def last(self) -> bytes:
        return b""
