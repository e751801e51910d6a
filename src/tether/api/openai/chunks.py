"""A gateway session's events as OpenAI's answer: pure translation, no I/O.

:class:`ChunkMapper` turns the events of a completion's run into
``chat.completion.chunk`` objects (and, whole, the ``chat.completion``); as the
relay's translator it writes them as SSE frames whose ``id:`` is the stream
offset after the event, ending with ``data: [DONE]`` when the run ended well.
Reasoning comes as ``reasoning_content`` (the field vLLM and DeepSeek use).
"""

from __future__ import annotations

from typing import Any

import orjson

from tether.agents.gateway import GatewaySpec
from tether.api.openai.errors import OpenAIError, run_error
from tether.sessions import events as ev
from tether.streams.wire import format_offset

DONE = b"data: [DONE]\n\n"


def completion_id(run_id: str) -> str:
    """The chat.completion id of a run: the same for every read of it."""
    return "chatcmpl-" + run_id.removeprefix("run_")


class ChunkMapper:
    """A gateway session's events -> OpenAI chunks, one output at most per event.

    Deterministic: the same events give the same outputs, so a reader that
    replays a run's events up to an offset is in exactly the state a reader
    that streamed them was in. Only the session's first run counts (a gateway
    session has one); seeded history carries no run id and is skipped.
    """

    def __init__(self, spec: GatewaySpec, *, frames: bool = True) -> None:
        self.spec = spec
        #: Whether :meth:`frame` writes SSE (not for a completion answered whole).
        self.frames = frames
        self.run_id: str | None = None
        self.created = 0
        self.message_id: str | None = None
        self._kinds: dict[str, str] = {}
        self._calls: dict[str, dict[str, Any]] = {}
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.usage: dict[str, int] | None = None
        self.error: OpenAIError | None = None
        #: The run-end's reason, once it has been seen.
        self.ended: str | None = None
        #: Whether the run-end has been seen (an attribute: the relay reads it per event).
        self.finished = False

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def usage_json(self) -> dict[str, Any]:
        usage = self.usage or {}
        prompt = usage.get("input_tokens", 0)
        completion = usage.get("output_tokens", 0)
        out: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if "cache_read_tokens" in usage:
            out["prompt_tokens_details"] = {"cached_tokens": usage["cache_read_tokens"]}
        if "reasoning_tokens" in usage:
            out["completion_tokens_details"] = {"reasoning_tokens": usage["reasoning_tokens"]}
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id(self.run_id or ""),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.spec.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.spec.include_usage:
            out["usage"] = None
        return out

    def apply(self, e: dict[str, Any]) -> dict[str, Any] | None:
        """Take one event; return the chunk (or ``{"error": ...}``) it makes, if any."""
        kind = e.get("type")
        if kind == ev.RUN_START and self.run_id is None:
            self.run_id = e["run_id"]
            self.created = int(e.get("ts") or 0)
            return None
        if self.run_id is None or e.get("run_id") != self.run_id or self.ended is not None:
            return None
        if kind == ev.MESSAGE_START and self.message_id is None:
            self.message_id = e["message_id"]
            return self._chunk({"role": "assistant", "content": "", "refusal": None})
        if kind == ev.PART_START and e.get("message_id") == self.message_id:
            self._part_start(e)
            return None
        if kind == ev.PART_DELTA:
            part = self._kinds.get(e["part_id"])
            delta = e.get("delta", "")
            if part == ev.TEXT:
                self.text.append(delta)
                return self._chunk({"content": delta})
            if part == ev.REASONING:
                self.reasoning.append(delta)
                return self._chunk({"reasoning_content": delta})
            return None
        if kind == ev.PART_END and e["part_id"] in self._calls:
            return self._tool_call(e)
        if kind == ev.MESSAGE_END and e.get("message_id") == self.message_id:
            self.usage = e.get("usage") or None
            return self._chunk({}, self.finish_reason)
        if kind == ev.ERROR:
            self.error = run_error(e.get("code"), e.get("message") or "the run failed")
            return {"error": self.error.body}
        if kind == ev.RUN_END:
            return self._run_end(e)
        return None

    def _part_start(self, e: dict[str, Any]) -> None:
        self._kinds[e["part_id"]] = e.get("kind", ev.TEXT)
        if e.get("kind") == ev.TOOL_CALL:
            self._calls[e["part_id"]] = {
                "id": e.get("tool_call_id", ""),
                "name": e.get("tool_name", ""),
            }

    def _tool_call(self, e: dict[str, Any]) -> dict[str, Any]:
        """The chunk of a finished tool call: its arguments whole, as one delta."""
        call = self._calls.pop(e["part_id"])
        value = e.get("value")
        arguments = value if isinstance(value, str) else orjson.dumps(value).decode()
        index = len(self.tool_calls)
        self.tool_calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        )
        return self._chunk({"tool_calls": [{"index": index, **self.tool_calls[-1]}]})

    def _run_end(self, e: dict[str, Any]) -> dict[str, Any] | None:
        """The usage chunk of a run that ended well, or the error of one that did not."""
        self.ended = e.get("reason", ev.COMPLETE)
        self.finished = True
        if self.ended == ev.COMPLETE:
            if not self.spec.include_usage:
                return None
            out = self._chunk({})
            out["choices"] = []
            out["usage"] = self.usage_json
            return out
        if self.error is None:
            self.error = OpenAIError(
                500 if self.ended == ev.CANCELLED else 503,
                f"the run was {self.ended}",
                type="server_error",
                code=f"run_{self.ended}",
            )
            return {"error": self.error.body}
        return None

    @property
    def ok(self) -> bool:
        return self.ended == ev.COMPLETE and self.error is None

    # -- the relay's translator ----------------------------------------------------

    def frame(self, position: int, event: bytes) -> bytes:
        """The SSE frame of the chunk ``event`` makes, if any; ``id:`` is ``position``."""
        output = self.apply(orjson.loads(event))
        if output is None or not self.frames:
            return b""
        return (
            b"id: "
            + format_offset(position).encode()
            + b"\ndata: "
            + orjson.dumps(output)
            + b"\n\n"
        )

    def last(self) -> bytes:
        """``data: [DONE]`` after a run that ended well (an error ends the stream as it is)."""
        return DONE if self.ok else b""

    def completion(self) -> dict[str, Any]:
        """The chat.completion object of a run that ended well."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) if self.text or not self.tool_calls else None,
            "refusal": None,
        }
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": completion_id(self.run_id or ""),
            "object": "chat.completion",
            "created": self.created,
            "model": self.spec.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage_json,
        }
