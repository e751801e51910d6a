"""Fitting what a model is sent into its context budget: the oldest turns go first.

A model's budget (``context_tokens`` in the config file, see
tether.providers.registry) bounds the estimated size of the messages a run
sends it. Every turn resends the whole branch, so without one a long session
grows until the upstream refuses it.

The estimate is a heuristic, not a tokenizer (no network, no vocabulary to
download): a message costs ``ceil(characters / 4)`` tokens for its text, its
tool calls' names and arguments, plus 4 for its role and framing. That is
close for English prose on the common BPE vocabularies, and low for code and
for scripts with many tokens per character: a budget set a little under the
model's window leaves the margin for that.

A turn is a user message and everything after it up to the next one (the
answer, its tool calls and their results). Turns are dropped whole, oldest
first, so a tool call never loses its result nor a result its call. The
system prompt (the leading system messages) and the latest turn always stay,
even when they alone exceed the budget: the upstream then says so itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.providers.base import ChatMessage
from tether.runtime.context import RunContext

#: Characters per token of the estimate.
CHARS_PER_TOKEN = 4
#: Tokens a message costs beyond its text (role, separators).
MESSAGE_OVERHEAD = 4


@dataclass(frozen=True, slots=True)
class Fitted:
    """What to send: the kept messages, how many were left out, their estimated size."""

    messages: list[ChatMessage]
    dropped: int
    tokens: int


def estimate(message: ChatMessage) -> int:
    """The estimated tokens of one message (see the module docstring)."""
    chars = len(message.content) + sum(len(c.name) + len(c.arguments) for c in message.tool_calls)
    return -(-chars // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD


def fit(messages: list[ChatMessage], budget: int) -> Fitted:
    """``messages`` without their oldest turns, as many as the estimate needs to fit ``budget``."""
    pinned = 0
    while pinned < len(messages) and messages[pinned].role == "system":
        pinned += 1
    # Each turn as (index of its first message, its estimated tokens).
    turns: list[tuple[int, int]] = []
    for i in range(pinned, len(messages)):
        if not turns or messages[i].role == "user":
            turns.append((i, 0))
        start, tokens = turns[-1]
        turns[-1] = (start, tokens + estimate(messages[i]))
    total = sum(estimate(m) for m in messages[:pinned]) + sum(t for _, t in turns)
    first = 0
    while total > budget and first < len(turns) - 1:
        total -= turns[first][1]
        first += 1
    if first == 0:
        return Fitted(messages, 0, total)
    cut = turns[first][0]
    return Fitted(messages[:pinned] + messages[cut:], cut - pinned, total)


async def fit_budget(
    ctx: RunContext, messages: list[ChatMessage], budget: int | None
) -> list[ChatMessage]:
    """``messages`` fitted to ``budget`` (None: no budget); the run says when it trimmed."""
    if budget is None:
        return messages
    fitted = fit(messages, budget)
    if fitted.dropped:
        await ctx.context_trimmed(dropped=fitted.dropped, tokens=fitted.tokens, budget=budget)
    return fitted.messages
