"""A session's record is stored as JSON bytes that every version of the server reads."""

from __future__ import annotations

import orjson

from tether.sessions.service import SessionRecord


def record() -> SessionRecord:
    return SessionRecord(
        id="ses_0001",
        owner="key-a",
        title="Trip",
        model="demo",
        agent=None,
        system="Be brief.",
        created_at=1.5,
        updated_at=2.5,
        archived=True,
        metadata={"gateway": {"tools": ["f"]}, "n": 3},
        tools=["weather", {"name": "ask", "parameters": {"type": "object"}}],
        status="error",
        usage={"input_tokens": 12, "output_tokens": 3},
    )


def test_a_record_is_stored_as_a_json_object_of_its_fields_in_order() -> None:
    assert orjson.loads(record().to_bytes()) == {
        "id": "ses_0001",
        "owner": "key-a",
        "title": "Trip",
        "model": "demo",
        "agent": None,
        "system": "Be brief.",
        "created_at": 1.5,
        "updated_at": 2.5,
        "archived": True,
        "metadata": {"gateway": {"tools": ["f"]}, "n": 3},
        "tools": ["weather", {"name": "ask", "parameters": {"type": "object"}}],
        "status": "error",
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }
    assert list(orjson.loads(record().to_bytes())) == [
        "id", "owner", "title", "model", "agent", "system", "created_at", "updated_at",
        "archived", "metadata", "tools", "status", "usage",
    ]  # fmt: skip


def test_a_record_written_before_tools_existed_reads_with_none() -> None:
    raw = orjson.loads(record().to_bytes())
    del raw["tools"]
    assert SessionRecord.from_bytes(orjson.dumps(raw)).tools == []


def test_a_record_reads_back_equal_from_its_bytes() -> None:
    assert SessionRecord.from_bytes(record().to_bytes()) == record()


def test_the_public_view_hides_the_owner_only() -> None:
    public = record().public()
    assert "owner" not in public
    assert public["metadata"] == {"gateway": {"tools": ["f"]}, "n": 3}
    assert len(public) == 12


def test_a_record_stored_before_runs_were_noted_reads_as_idle_with_no_usage() -> None:
    stored = orjson.loads(record().to_bytes())
    del stored["status"], stored["usage"]
    old = SessionRecord.from_bytes(orjson.dumps(stored))
    assert (old.status, old.usage) == ("idle", {})
