"""One spelling of a message's text: ``message.text``, a property, in agents and in the SDK."""

from __future__ import annotations

from tether.client import Message as SdkMessage
from tether.sessions.fold import Message, Part


def test_a_message_text_is_a_property_in_agents_and_in_the_sdk() -> None:
    parts = [
        Part("p1", "text", "Hello, "),
        Part("p2", "reasoning", "hmm"),
        Part("p3", "text", "you"),
    ]
    agents_view = Message("msg_1", "assistant", None, parts)
    sdk_view = SdkMessage.from_json(
        {
            "id": "msg_1",
            "role": "assistant",
            "parent_id": None,
            "parts": [p.to_json() for p in parts],
        }
    )
    assert agents_view.text == sdk_view.text == "Hello, you"
