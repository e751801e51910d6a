"""A stream's metadata after an append (the fields an append changes, and no others),
and the content-type parsing every append asks for."""

from __future__ import annotations

import dataclasses

import pytest

from tether.store import base
from tether.store.base import StreamMeta

#: What an append may change, with the values given to it below.
CHANGED = {
    "tail": 99,
    "closed": True,
    "last_seq": "s9",
    "accessed_at": 99.5,
    "closed_by": ("p", 9, 9),
}


def test_after_append_carries_every_field_an_append_does_not_change() -> None:
    """Every field but the five an append sets keeps its value, including any field
    added to StreamMeta later (a copy written field by field must not drop one)."""
    before = StreamMeta(
        id=7, path="a/b", content_type="application/json", created_at=1.5, tail=3,
        closed=False, ttl=60, expires_at=2e9, accessed_at=2.5, fork_of=4, fork_offset=2,
        last_seq="s1", closed_by=None, soft_deleted=True, refs=5,
    )  # fmt: skip
    given = {f.name for f in dataclasses.fields(StreamMeta)} - set(CHANGED)
    defaults = StreamMeta(id=0, path="", content_type="", created_at=0.0)
    assert all(getattr(before, n) != getattr(defaults, n) for n in given), "set every field"
    after = before.after_append(**CHANGED)  # type: ignore[arg-type]
    for name in given:
        assert getattr(after, name) == getattr(before, name), name
    for name, value in CHANGED.items():
        assert getattr(after, name) == value, name
    assert before.tail == 3 and not before.closed  # (a copy: readers may hold the old one)


def test_media_type_answers_alike_whether_remembered_or_not_and_remembers_a_bounded_few(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Content types come from clients: what ``media_type`` remembers stays bounded
    (in count and in length), and a type it did not remember gets the same answer."""
    monkeypatch.setattr(base, "_MEDIA_TYPES", {})
    for i in range(base._MEDIA_TYPES_MAX * 3):
        assert base.media_type(f"Application/X-{i} ; charset=utf-8") == f"application/x-{i}"
    long = "Text/Plain;" + "x" * 10_000
    assert base.media_type(long) == "text/plain"
    assert long not in base._MEDIA_TYPES
    assert len(base._MEDIA_TYPES) <= base._MEDIA_TYPES_MAX
    assert base.media_type(" APPLICATION/JSON; charset=utf-8") == "application/json"
