"""The client's pure parts, without a server: SSE decoding, event typing, following."""

from __future__ import annotations

import json

import pytest

from tether.client import (
    APIError,
    Conflict,
    ErrorEvent,
    Gone,
    NotFound,
    PartDelta,
    RunEnd,
    SequenceGap,
    ServerError,
    StaleEpoch,
    UnknownEvent,
    parse_event,
)
from tether.client._follow import RunFollower, offset_key
from tether.client._sse import SSEComment, SSEDecoder, SSEEvent
from tether.client.errors import BadRequest, error_for

STREAM = (
    b"\xef\xbb\xbfretry: 1000\n\n"
    b": keep-alive\n\n"
    b'id: 0000000000000000_0000000000000001\ndata: {"a":1}\n\n'
    b'event: control\r\ndata:{"b":\r\ndata: 2}\r\n\r\n'
    b"id: 0000000000000000_0000000000000002\rdata: x\r\r"
    b"data: no id here\n\n"
    b"data: cut off before its blank line\n"
)


def decode(chunks: list[bytes]) -> list[SSEEvent | SSEComment]:
    decoder = SSEDecoder()
    out: list[SSEEvent | SSEComment] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def test_sse_decoder_whole_and_byte_by_byte() -> None:
    whole = decode([STREAM])
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == whole
    assert decode([STREAM[:37], STREAM[37:38], STREAM[38:]]) == whole
    assert whole == [
        SSEComment("keep-alive"),
        SSEEvent("message", '{"a":1}', "0000000000000000_0000000000000001"),
        SSEEvent("control", '{"b":\n2}', "0000000000000000_0000000000000001"),
        SSEEvent("message", "x", "0000000000000000_0000000000000002"),
        SSEEvent("message", "no id here", "0000000000000000_0000000000000002"),
    ]


def test_sse_decoder_crlf_split_across_chunks() -> None:
    assert decode([b"data: a\r", b"\n\r", b"\n"]) == [SSEEvent("message", "a", None)]


def test_parse_event_types_and_fallback() -> None:
    delta = parse_event({"type": "part-delta", "id": "ev_1", "run_id": "r", "part_id": "p",
                         "delta": "hi"}, "0000000000000000_0000000000000003")  # fmt: skip
    assert isinstance(delta, PartDelta) and delta.delta == "hi" and delta.run_id == "r"
    assert delta.offset == "0000000000000000_0000000000000003"
    err = parse_event({"type": "error", "code": "X", "message": "m"})
    assert isinstance(err, ErrorEvent) and err.code == "X"
    new = parse_event({"type": "from-the-future", "run_id": "r", "x": 1})
    assert isinstance(new, UnknownEvent) and new.raw["x"] == 1 and new.run_id == "r"
    assert isinstance(parse_event({"type": "run-end", "run_id": "r"}), RunEnd)


def test_offsets_compare() -> None:
    assert offset_key("-1") < offset_key("0000000000000000_0000000000000000")  # type: ignore[operator]
    assert offset_key("0000000000000000_0000000000000009") < offset_key(  # type: ignore[operator]
        "0000000000000000_0000000000000010"
    )
    assert offset_key("now") is None


def sse(offset: int, **event: object) -> SSEEvent:
    return SSEEvent("message", json.dumps(event), f"0000000000000000_{offset:016d}")


def test_follower_ignores_replays_and_other_runs() -> None:
    f = RunFollower("run_a", "msg_a", "-1")
    assert f.accept(sse(1, type="user-message", message_id="msg_a")) != []
    assert f.accept(sse(2, type="run-start", run_id="run_a")) != []
    assert f.accept(sse(3, type="part-delta", run_id="run_b", part_id="p", delta="x")) == []
    assert f.accept(sse(2, type="run-start", run_id="run_a")) == []  # replayed: dropped
    assert f.offset == "0000000000000000_0000000000000003"


def test_follower_folds_retries_and_final_text() -> None:
    f = RunFollower("r", None, "-1")
    for i, ev in enumerate(
        [
            {"type": "run-start", "run_id": "r"},
            {"type": "message-start", "run_id": "r", "message_id": "m"},
            {"type": "part-start", "run_id": "r", "message_id": "m", "part_id": "m:1"},
            {"type": "part-delta", "run_id": "r", "part_id": "m:1", "delta": "garbage"},
            {"type": "retry", "run_id": "r", "attempt": 1, "discard": ["m:1"]},
            {"type": "part-start", "run_id": "r", "message_id": "m", "part_id": "m:2"},
            {"type": "part-delta", "run_id": "r", "part_id": "m:2", "delta": "he"},
            {"type": "part-end", "run_id": "r", "part_id": "m:2", "text": "hello"},
            {"type": "message-end", "run_id": "r", "message_id": "m", "usage": {"out": 1}},
            {"type": "run-end", "run_id": "r", "reason": "complete"},
        ],
        start=1,
    ):
        f.accept(sse(i, **ev))
    result = f.state.result()
    assert f.done and result.ok and result.text == "hello" and result.usage == {"out": 1}
    assert [p.id for p in result.parts] == ["m:2"]


def test_follower_queue_lookahead() -> None:
    queued = [{"run_id": "r", "kind": "message", "message_id": "m"}]
    # Started in the same batch: the event right after the queue-update is ours.
    f = RunFollower("r", "m", "-1", queued=True)
    f.accept(sse(1, type="queue-update", queue=queued))
    f.accept(sse(2, type="queue-update", queue=[]))
    assert f.lookahead == "0000000000000000_0000000000000002"
    assert f.resolve_lookahead({"type": "user-message", "message_id": "m"}) == []
    assert not f.done
    # Cancelled while queued: dropped from the queue, nothing of it follows.
    g = RunFollower("r", "m", "-1", queued=True)
    g.accept(sse(1, type="cancel", run_id="r"))
    g.accept(sse(2, type="queue-update", queue=[]))
    (end,) = g.resolve_lookahead(None)
    assert isinstance(end, RunEnd) and end.synthesized and end.reason == "cancelled"


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", BadRequest),
        (422, "validation_error", BadRequest),
        (404, "not_found", NotFound),
        (410, "gone", Gone),
        (409, "conflict", Conflict),
        (409, "sequence_gap", SequenceGap),
        (403, "stale_epoch", StaleEpoch),
        (503, "unavailable", ServerError),
        (500, "internal", ServerError),
        (418, "teapot", APIError),
    ],
)
def test_error_mapping(status: int, code: str, cls: type[APIError]) -> None:
    body = json.dumps({"error": {"code": code, "message": "why"}}).encode()
    err = error_for(status, body, {"Producer-Epoch": "4"}, method="GET", url="http://x/y")
    assert type(err) is cls and err.status == status and err.code == code
    assert err.message == "why" and "GET http://x/y" in str(err)
    if cls is StaleEpoch:
        assert err.current_epoch == 4  # type: ignore[attr-defined]


def test_error_mapping_without_json_body() -> None:
    err = error_for(502, b"<html>bad gateway</html>")
    assert isinstance(err, ServerError) and err.code == "http_502" and "bad gateway" in err.message
