"""The AI SDK's UI messages in tether's terms: pure, no HTTP (tether.api.aisdk.request)."""

from __future__ import annotations

import pytest

from tether.api.aisdk.chats import Chat, chat_key
from tether.api.aisdk.request import (
    UIMessageIn,
    is_empty_assistant,
    new_user_parts,
    seed_events,
    title_of,
)
from tether.runtime.runner import InvalidInput
from tether.sessions import events as ev


def msg(role: str, *parts: dict[str, object], id: str = "m") -> UIMessageIn:
    return UIMessageIn(id=id, role=role, parts=list(parts))  # type: ignore[arg-type]


def test_a_new_user_message_needs_text() -> None:
    parts = new_user_parts(msg("user", {"type": "text", "text": "hi"}, {"type": "step-start"}))
    assert parts == [{"type": "text", "text": "hi"}]
    with pytest.raises(InvalidInput):
        new_user_parts(msg("user", {"type": "text", "text": "  "}))
    with pytest.raises(InvalidInput):
        new_user_parts(msg("assistant", {"type": "text", "text": "hi"}))
    with pytest.raises(InvalidInput):
        new_user_parts(msg("user", {"type": "file", "url": "data:..."}))


def test_an_earlier_history_becomes_one_chain_of_events() -> None:
    chat = Chat("key", "chat_1", "ses_1")
    history = [
        msg("system", {"type": "text", "text": "ignored"}, id="s"),
        msg("user", {"type": "text", "text": "weather?"}, id="u1"),
        msg(
            "assistant",
            {"type": "reasoning", "text": "think"},
            {
                "type": "tool-weather",
                "toolCallId": "c1",
                "input": {"city": "Oslo"},
                "state": "output-available",
                "output": "sunny",
            },
            {"type": "text", "text": "Sunny."},
            id="a1",
        ),
        msg("assistant", {"type": "step-start"}, id="empty"),
    ]
    events, parent = seed_events(chat, history, None)
    kinds = [e["type"] for e in events]
    assert kinds == [
        ev.USER_MESSAGE, ev.MESSAGE_START, ev.PART_START, ev.PART_END, ev.PART_START,
        ev.PART_END, ev.TOOL_RESULT, ev.PART_START, ev.PART_END, ev.MESSAGE_END,
    ]  # fmt: skip
    assert set(chat.ids) == {"u1", "a1"}  # client ids -> tether ids
    assert events[1]["parent_id"] == chat.ids["u1"]
    assert parent == chat.ids["a1"]
    assert events[4]["tool_name"] == "weather" and events[6]["output"] == "sunny"


def test_empty_assistant_messages_and_titles() -> None:
    assert is_empty_assistant(msg("assistant", {"type": "text", "text": ""}))
    assert not is_empty_assistant(msg("assistant", {"type": "text", "text": "x"}))
    long = "word " * 40
    assert title_of([msg("user", {"type": "text", "text": long})]) == long.strip()[:79] + "…"
    assert title_of([msg("assistant", {"type": "text", "text": "x"})]) is None


def test_chats_are_per_caller() -> None:
    assert chat_key("alice", "c1") != chat_key("bob", "c1")
    chat = Chat(chat_key(None, "c1"), "c1", "ses_1", {"u": "msg_1"})
    assert Chat.from_bytes(chat.key, chat.to_bytes()) == chat
    assert chat.tether_id("u") == "msg_1" and chat.tether_id("other") == "other"
