"""Queued runs survive the trip through the stream unchanged (pure, no store)."""

from __future__ import annotations

import pytest

from tether.runtime.queue import QueueItem, queue_update
from tether.sessions import events as ev

ITEMS = [
    QueueItem("run_1", "message", "msg_1", [{"type": "text", "text": "hi"}]),
    QueueItem("run_2", "message", "msg_2", [], None, explicit_parent=True),  # a root
    QueueItem("run_3", "message", "msg_3", [], "msg_1", explicit_parent=True, edit_of="msg_0"),
    QueueItem("run_4", "regenerate", "msg_1"),
    QueueItem("run_5", "continue", "msg_4"),
    QueueItem("run_6", "regenerate", "msg_1", retry_of="run_0"),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item.run_id)
def test_an_item_reads_back_from_its_public_form(item: QueueItem) -> None:
    assert QueueItem.from_public(item.public()) == item


def test_only_messages_carry_parts_and_an_unchosen_parent_is_left_out() -> None:
    assert "parts" not in ITEMS[3].public()
    assert "parent_id" not in ITEMS[0].public()
    assert ITEMS[1].public()["parent_id"] is None


def test_a_queue_update_lists_the_items_in_order() -> None:
    event = queue_update(ITEMS[:2])
    assert event["type"] == ev.QUEUE_UPDATE
    assert [q["run_id"] for q in event["queue"]] == ["run_1", "run_2"]
