"""The rules a local store applies before an append, without a store."""

from __future__ import annotations

import pytest

from tether.store.append_checks import check_producer, check_sequence, normalized
from tether.store.base import AppendRequest, Producer, StreamMeta
from tether.store.errors import (
    BadRequest,
    ContentTypeMismatch,
    SeqConflict,
    SequenceGap,
    StaleEpoch,
)


def meta(content_type: str = "text/plain", last_seq: str | None = None) -> StreamMeta:
    return StreamMeta(
        id=1, path="s", content_type=content_type, created_at=0.0, tail=7, last_seq=last_seq
    )


def test_a_new_producer_starts_at_sequence_zero() -> None:
    assert check_producer(meta(), Producer("p", 0, 0), None) is None
    with pytest.raises(SequenceGap):
        check_producer(meta(), Producer("p", 0, 1), None)


def test_a_repeated_producer_append_gets_the_earlier_result_and_writes_nothing() -> None:
    result = check_producer(meta(), Producer("p", 2, 4), (2, 5))
    assert result is not None
    assert (result.tail, result.appended, result.producer_epoch, result.producer_seq) == (
        7,
        False,
        2,
        5,
    )


def test_producer_gaps_stale_epochs_and_new_epochs_not_at_zero_are_refused() -> None:
    with pytest.raises(SequenceGap):
        check_producer(meta(), Producer("p", 2, 7), (2, 5))
    with pytest.raises(StaleEpoch):
        check_producer(meta(), Producer("p", 1, 9), (2, 5))
    with pytest.raises(BadRequest):
        check_producer(meta(), Producer("p", 3, 1), (2, 5))
    assert check_producer(meta(), Producer("p", 3, 0), (2, 5)) is None
    assert check_producer(meta(), Producer("p", 2, 6), (2, 5)) is None


def test_empty_byte_messages_are_dropped_but_json_messages_are_kept() -> None:
    assert normalized(meta(), AppendRequest([b"a", b"", b"b"])).messages == [b"a", b"b"]
    kept = AppendRequest([b"1", b""])
    assert normalized(meta("application/json"), kept) is kept


def test_a_content_type_other_than_the_streams_is_refused() -> None:
    with pytest.raises(ContentTypeMismatch):
        normalized(meta(), AppendRequest([b"a"], content_type="application/json"))
    same = AppendRequest([b"a"], content_type="text/plain; charset=utf-8")
    assert normalized(meta(), same) is same


def test_stream_seq_must_grow_and_an_append_must_carry_something() -> None:
    with pytest.raises(SeqConflict):
        check_sequence(meta(last_seq="b"), AppendRequest([b"a"], seq="a"))
    check_sequence(meta(last_seq="b"), AppendRequest([b"a"], seq="c"))
    with pytest.raises(BadRequest):
        check_sequence(meta(), AppendRequest([]))
    check_sequence(meta(), AppendRequest([], close=True))
