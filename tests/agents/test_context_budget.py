"""The context budget: what a model is sent loses its oldest turns, whole, and nothing else."""

from __future__ import annotations

from tether.agents.context_budget import estimate, fit
from tether.providers.base import ChatMessage, ToolCall


def msg(role: str, chars: int, **fields: object) -> ChatMessage:
    """A message whose text is ``chars`` characters long: ``chars / 4 + 4`` tokens by estimate."""
    return ChatMessage(role, "x" * chars, **fields)  # type: ignore[arg-type]


SYSTEM = msg("system", 40)  # 14 tokens


def turn(*, answered: bool = True) -> list[ChatMessage]:
    """A user message (and its answer), each 14 tokens by estimate."""
    return [msg("user", 40), msg("assistant", 40)] if answered else [msg("user", 40)]


def test_the_estimate_is_a_quarter_of_the_characters_rounded_up_plus_the_framing() -> None:
    assert estimate(msg("user", 0)) == 4
    assert estimate(msg("user", 1)) == 5
    assert estimate(msg("user", 8)) == 6
    call = ToolCall("call_1", "weather", '{"city": "Paris"}')  # 7 + 17 characters
    assert estimate(ChatMessage("assistant", "", [call])) == 6 + 4


def test_what_fits_is_sent_as_it_is() -> None:
    messages = [SYSTEM, *turn(), *turn(answered=False)]
    fitted = fit(messages, 14 * 4)
    assert fitted.messages == messages
    assert (fitted.dropped, fitted.tokens) == (0, 56)


def test_the_oldest_turns_go_first_and_the_system_prompt_stays() -> None:
    first, second, latest = turn(), turn(), turn(answered=False)
    fitted = fit([SYSTEM, *first, *second, *latest], 14 * 4)
    assert fitted.messages == [SYSTEM, *second, *latest]
    assert (fitted.dropped, fitted.tokens) == (2, 14 * 4)


def test_a_tool_call_and_its_result_go_or_stay_together() -> None:
    call = ToolCall("call_1", "lookup", "{}")
    with_tool = [
        msg("user", 40),
        ChatMessage("assistant", "", [call]),
        ChatMessage("tool", "x" * 400, tool_call_id="call_1"),
        msg("assistant", 40),
    ]
    fitted = fit([*with_tool, *turn(answered=False)], 100)
    assert fitted.messages == turn(answered=False)  # the whole turn left, its result with its call
    assert fitted.dropped == 4
    fitted = fit([*turn(), *with_tool, *turn(answered=False)], 160)
    assert fitted.messages == [*with_tool, *turn(answered=False)]


def test_the_latest_turn_stays_even_when_it_alone_is_past_the_budget() -> None:
    latest = [
        msg("user", 400),
        ChatMessage("assistant", "", [ToolCall("c", "t", "{}")]),
        ChatMessage("tool", "ok", tool_call_id="c"),
    ]
    fitted = fit([SYSTEM, *turn(), *latest], 10)
    assert fitted.messages == [SYSTEM, *latest]
    assert fitted.dropped == 2
    assert fitted.tokens > 10


def test_messages_before_the_first_user_message_are_a_turn_of_their_own() -> None:
    greeting = msg("assistant", 40)
    fitted = fit([SYSTEM, greeting, *turn(), *turn(answered=False)], 14 * 4)
    assert fitted.messages == [SYSTEM, *turn(), *turn(answered=False)]
    assert fitted.dropped == 1


def test_a_conversation_of_one_turn_is_never_trimmed() -> None:
    messages = [SYSTEM, msg("user", 4000)]
    assert fit(messages, 1).messages == messages
    assert fit([], 1).messages == []
