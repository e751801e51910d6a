"""``POST /v1/messages/count_tokens``: exact from an Anthropic upstream, else an estimate.

An Anthropic upstream counts with its own tokenizer (its count_tokens
endpoint, given the request's counted fields as the client sent them). For
any other model the count is tether's estimate
(:mod:`tether.agents.context_budget`: characters / 4 plus framing per
message), with a flat :data:`IMAGE_TOKENS` per image and a file's bytes / 4.
The answer's ``X-Tether-Token-Count`` header says which (``exact`` or
``estimate``).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from tether.agents.context_budget import CHARS_PER_TOKEN, estimate
from tether.api.completion import Completion
from tether.providers.base import ChatMessage, ToolCall

#: The fields of a request the upstream's count_tokens takes.
COUNTED_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking")
#: The response header that says how the count was made.
COUNT_HEADER = "x-tether-token-count"
#: An image's estimated cost (Anthropic's for about a megapixel).
IMAGE_TOKENS = 1600


def counted_body(native: dict[str, Any], model: str) -> dict[str, Any]:
    """What an Anthropic upstream's count_tokens is asked: the counted fields, its model."""
    return {"model": model, **{k: native[k] for k in COUNTED_FIELDS if k in native}}


def estimated(req: Completion) -> int:
    """tether's estimate of a request's input tokens (no tokenizer, no network)."""
    messages = [ChatMessage("system", req.system)] if req.system else []
    for turn in req.seed:
        calls = [
            ToolCall(c["id"], c["name"], orjson.dumps(c.get("arguments")).decode())
            for c in turn.get("tool_calls", [])
        ]
        messages.append(ChatMessage(turn["role"], turn.get("text", ""), calls))
        messages += [
            ChatMessage("tool", str(c.get("result", c.get("error", ""))))
            for c in turn.get("tool_calls", [])
        ]
    send = req.send or []
    messages.append(ChatMessage("user", "".join(p.get("text", "") for p in send)))
    total = sum(estimate(m) for m in messages)
    total += sum(_attachment(p) for p in send if p.get("type") in ("image", "file"))
    if req.spec.tools:
        total += math.ceil(len(orjson.dumps(req.spec.tools)) / CHARS_PER_TOKEN)
    return total


def _attachment(part: dict[str, Any]) -> int:
    if part["type"] == "image":
        return IMAGE_TOKENS
    return math.ceil(int(part.get("size", 0)) / CHARS_PER_TOKEN)
