"""The built-in ``demo`` model: offline, deterministic, instant to set up.

It answers the last user message (or, when the conversation ends with tool
results, those results). Directives at the start of the message drive it:

``/count N [MS]``
    streams ``1 2 ... N`` (N up to 10,000), one number per delta, MS ms
    apart (default 20).
``/fail K rest``
    fails attempts 1..K with a transient 503, then answers ``rest``.
``/reason rest``
    streams a short reasoning first, then answers ``rest``.
``/tool NAME [JSON]``
    calls tool NAME with the JSON object (default ``{}``), then, once the
    result is back, answers ``Tool NAME returned: <result>``.

Anything else gets ``You said: <text>`` and a fixed sentence, a word per
delta. Every response ends with a Usage that counts words as tokens.

What one message makes is bounded, whatever it says: every delta is an event
in the session's log (a 14-byte ``/count 50000 0`` once made a 354 MB WAL),
so an answer is at most :data:`MAX_COUNT` numbers or :data:`MAX_REPLY`
characters of text (an echo or a tool result longer than that is cut), plus
the fixed reasoning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from dataclasses import dataclass

from tether.providers.base import (
    ChatMessage,
    ItemStream,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    Usage,
)

MAX_COUNT = 10_000
#: Characters of text one answer streams at most (so at most as many deltas).
MAX_REPLY = 10_000
MAX_COUNT_MS = 10_000.0
DEFAULT_COUNT_MS = 20.0
MAX_FAIL = 1_000

FRIENDLY = "I am the demo model: offline and deterministic. Try /count 5 or /reason hello."
REASONING = "The user wants an answer. I will think it through briefly, then reply."

COUNT_USAGE = (
    f"/count needs a whole number N from 1 to {MAX_COUNT} and an optional delay MS "
    "from 0 to 10000 ms, e.g. /count 10 or /count 10 50."
)
CUT_NOTE = f" [cut: the demo model answers with at most {MAX_REPLY} characters]"
FAIL_USAGE = (
    "/fail needs a whole number K from 0 to 1000 first, e.g. /fail 2 hello "
    "(attempts 1 and 2 fail, the third answers hello)."
)
TOOL_USAGE = (
    "/tool needs a tool name (letters, digits, _ or -) and optional JSON object "
    f'arguments of at most {MAX_REPLY} characters, e.g. /tool get_time {{"tz": "UTC"}}.'
)

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PIECES = re.compile(r"\s*\S+(?:\s+\Z)?")


def words(text: str) -> list[str]:
    """``text`` in word-sized pieces that concatenate back to exactly ``text``.

    Whitespace goes with the word after it (``"a b"`` -> ``["a", " b"]``);
    trailing whitespace goes with the last word.
    """
    pieces = _PIECES.findall(text)
    rest = text[len("".join(pieces)) :]
    if rest:  # only whitespace, no word at all
        pieces.append(rest)
    return pieces


def _tokens(text: str) -> int:
    return len(text.split())


def _split(text: str) -> tuple[str, str]:
    """The first word and the rest, both stripped."""
    parts = text.strip().split(maxsplit=1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


@dataclass(slots=True)
class _Plan:
    reasoning: bool = False
    #: ``count``: numbers; ``tool``: a call; ``text``: a reply.
    kind: str = "text"
    text: str = ""
    count: int = 0
    delay: float = 0.0
    tool: ToolCall | None = None


def default_reply(text: str) -> str:
    text = text.strip()
    said = f"You said: {text}" if text else "You sent an empty message."
    return f"{said}\n\n{FRIENDLY}"


class DemoModel:
    """The ``demo`` provider; one model, ``demo``.

    ``word_delay`` is the pause (seconds) between the words of ordinary
    replies; ``/count`` has its own.
    """

    name = "demo"

    def __init__(self, *, word_delay: float = 0.005) -> None:
        self.word_delay = word_delay

    def models(self) -> list[str]:
        return ["demo"]

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"DemoModel(word_delay={self.word_delay!r})"

    async def stream(self, request: ModelRequest) -> ItemStream:
        input_tokens = sum(_tokens(m.content) for m in request.messages)
        output_tokens = 0
        messages = request.messages
        if messages and messages[-1].role == "tool":
            plan = _Plan(text=_tool_reply(messages))
        else:
            plan = self._plan(_last_user_text(messages), request)

        if plan.reasoning:
            for i, piece in enumerate(words(REASONING)):
                if i:
                    await asyncio.sleep(self.word_delay)
                yield ReasoningDelta(piece)
            output_tokens += _tokens(REASONING)
            await asyncio.sleep(self.word_delay)

        if plan.kind == "count":
            for n in range(1, plan.count + 1):
                if n > 1:
                    await asyncio.sleep(plan.delay)
                yield TextDelta(str(n) if n == 1 else f" {n}")
            output_tokens += plan.count
        elif plan.kind == "tool" and plan.tool is not None:
            call = plan.tool
            for piece in words(call.arguments):  # the arguments stream, as a model's do
                yield ToolCallDelta(call.id, call.name, piece)
            yield ToolCallItem(call)
            output_tokens += _tokens(f"{plan.tool.name} {plan.tool.arguments}")
        else:
            text = _cut(plan.text)
            for i, piece in enumerate(words(text)):
                if i:
                    await asyncio.sleep(self.word_delay)
                yield TextDelta(piece)
            output_tokens += _tokens(text)

        yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)

    def _plan(self, text: str, request: ModelRequest) -> _Plan:
        """What to answer to ``text``; raises the ProviderError of an active ``/fail``.

        Directives chain (``/fail 1 /reason /count 3``), and the whole chain is
        read before anything is streamed, so a failure always comes first.
        """
        plan = _Plan()
        while True:
            head, rest = _split(text)
            if head == "/fail":
                k_text, rest = _split(rest)
                k = _int(k_text)
                if k is None or not 0 <= k <= MAX_FAIL:
                    plan.text = FAIL_USAGE
                    return plan
                if request.attempt <= k:
                    raise ProviderError(
                        f"demo: simulated upstream failure (attempt {request.attempt} of "
                        f"{k} failing)",
                        transient=True,
                        status=503,
                    )
                text = rest
            elif head == "/reason":
                plan.reasoning = True
                text = rest
            elif head == "/count":
                return _count(rest, plan)
            elif head == "/tool":
                return _tool(rest, plan, request)
            else:
                plan.text = default_reply(text)
                return plan


def _cut(text: str) -> str:
    """``text``, cut to MAX_REPLY characters (and saying so) if it is longer."""
    return text if len(text) <= MAX_REPLY else text[:MAX_REPLY] + CUT_NOTE


def _int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[+-]?\d{1,12}", text) else None


def _count(args: str, plan: _Plan) -> _Plan:
    parts = args.split()
    n = _int(parts[0]) if parts else None
    delay = DEFAULT_COUNT_MS
    if len(parts) == 2:
        try:
            delay = float(parts[1])
        except ValueError:
            delay = -1.0
    if (
        len(parts) > 2
        or n is None
        or not 1 <= n <= MAX_COUNT
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_COUNT_MS
    ):
        plan.text = COUNT_USAGE
        return plan
    plan.kind, plan.count, plan.delay = "count", n, delay / 1000
    return plan


def _tool(args: str, plan: _Plan, request: ModelRequest) -> _Plan:
    name, arguments = _split(args)
    arguments = arguments or "{}"
    try:
        valid = (
            _TOOL_NAME.fullmatch(name) is not None
            and len(arguments) <= MAX_REPLY
            and isinstance(json.loads(arguments), dict)
        )
    except ValueError:
        valid = False
    if not valid:
        plan.text = TOOL_USAGE
        return plan
    # Calls already made in this turn (after the last user message), so a
    # second call to the same tool in one run gets a different id.
    made = 0
    for m in reversed(request.messages):
        if m.role == "user":
            break
        made += len(m.tool_calls)
    digest = hashlib.sha256(f"{request.run_id}\0{name}\0{made}".encode()).hexdigest()[:8]
    plan.kind = "tool"
    plan.tool = ToolCall(id=f"call_{name}_{digest}_{made + 1}", name=name, arguments=arguments)
    return plan


def _last_user_text(messages: list[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            return m.content
    return ""


def _tool_reply(messages: list[ChatMessage]) -> str:
    """One line per trailing tool result, its content verbatim."""
    results: list[ChatMessage] = []
    for m in reversed(messages):
        if m.role != "tool":
            break
        results.append(m)
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    lines = []
    for m in reversed(results):
        name = names.get(m.tool_call_id or "", m.tool_call_id or "unknown")
        verb = "failed" if m.is_error else "returned"
        lines.append(f"Tool {name} {verb}: {m.content}")
    return "\n".join(lines)
