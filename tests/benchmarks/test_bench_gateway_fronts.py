"""The gateway benchmark's client reads each front's stream: tokens counted, the end seen."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_gateway import StreamedCompletion, completion_request

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"


def sse(kind: str, data: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def streams() -> dict[str, bytes]:
    tokens = [f" t{i}@{1000 + i}" for i in range(3)]
    chat = b"".join(
        b"data: " + orjson.dumps({"choices": [{"delta": {"content": t}}]}) + b"\n\n" for t in tokens
    )
    responses = sse("response.created", {"type": "response.created"}) + b"".join(
        sse("response.output_text.delta", {"type": "response.output_text.delta", "delta": t})
        for t in tokens
    )
    messages = sse("message_start", {"type": "message_start"}) + b"".join(
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": t}},
        )
        for t in tokens
    )
    return {
        "chat": chat + b"data: [DONE]\n\n",
        "responses": responses + sse("response.completed", {"type": "response.completed"}),
        "messages": messages + sse("message_stop", {"type": "message_stop"}),
    }


@pytest.mark.parametrize("front", ["chat", "responses", "messages"])
async def test_each_fronts_stream_is_read_to_its_end(front: str) -> None:
    call = StreamedCompletion(completion_request(1, front), 3, front)
    call.data_received(HEAD + streams()[front])
    assert call.finished.done() and call.error is None
    assert call.stamps == [1000, 1001, 1002]


@pytest.mark.parametrize("front", ["responses", "messages"])
async def test_a_stream_that_ends_short_is_a_failure(front: str) -> None:
    call = StreamedCompletion(completion_request(1, front), 4, front)
    call.data_received(HEAD + streams()[front])
    assert call.error is not None and "3 of 4" in call.error


def test_each_front_asks_its_own_path() -> None:
    assert b"POST /v1/responses " in completion_request(1, "responses")
    assert b"POST /v1/messages " in completion_request(1, "messages")
    assert b"x-api-key: " in completion_request(1, "messages")
