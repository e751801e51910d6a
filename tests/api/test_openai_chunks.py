"""A gateway session's events as OpenAI chunks: pure, no HTTP (tether.api.openai.chunks)."""

from __future__ import annotations

from typing import Any

import orjson

from tether.agents.gateway import GatewaySpec
from tether.api.openai.chunks import ChunkMapper
from tether.sessions import events as ev
from tether.streams.wire import format_offset


def run_events(*, error: str | None = None, usage: bool = True) -> list[bytes]:
    """The events of a gateway run: text, reasoning, a tool call, then its end."""
    es: list[dict[str, Any]] = [
        ev.event(ev.USER_MESSAGE, message_id="msg_u", parts=[{"type": "text", "text": "hi"}]),
        ev.event(ev.RUN_START, run_id="run_1", ts=1700000000.5),
        ev.event(ev.MESSAGE_START, run_id="run_1", message_id="msg_a", role="assistant"),
        ev.event(ev.PART_START, run_id="run_1", message_id="msg_a", part_id="p1",
                 kind=ev.REASONING),
        ev.event(ev.PART_DELTA, run_id="run_1", part_id="p1", delta="hmm"),
        ev.event(ev.PART_START, run_id="run_1", message_id="msg_a", part_id="p2", kind=ev.TEXT),
        ev.event(ev.PART_DELTA, run_id="run_1", part_id="p2", delta="Hel"),
        ev.event(ev.PART_DELTA, run_id="run_1", part_id="p2", delta="lo"),
        ev.event(ev.PART_START, run_id="run_1", message_id="msg_a", part_id="p3",
                 kind=ev.TOOL_CALL, tool_call_id="c1", tool_name="f"),
        ev.event(ev.PART_END, run_id="run_1", part_id="p3", value={"a": 1}),
    ]  # fmt: skip
    if error is not None:
        es.append(ev.event(ev.ERROR, run_id="run_1", code=error, message="upstream said no"))
        es.append(ev.event(ev.RUN_END, run_id="run_1", reason=ev.FAILED))
    else:
        es.append(
            ev.event(
                ev.MESSAGE_END, run_id="run_1", message_id="msg_a",
                usage={"input_tokens": 3, "output_tokens": 5} if usage else None,
            )
        )  # fmt: skip
        es.append(ev.event(ev.RUN_END, run_id="run_1", reason=ev.COMPLETE))
    return [orjson.dumps(e) for e in es]


def frames(mapper: ChunkMapper, events: list[bytes]) -> list[bytes]:
    out = []
    for position, event in enumerate(events, 1):
        if written := mapper.frame(position, event):
            out.append(written)
        if mapper.finished:
            out.append(mapper.last())
            break
    return out


def data(frame: bytes) -> Any:
    return orjson.loads(frame.split(b"data: ", 1)[1])


def test_a_runs_events_become_chunks_with_the_offset_after_each_event() -> None:
    mapper = ChunkMapper(GatewaySpec("openai/gpt", include_usage=True))
    out = frames(mapper, run_events())
    ids = [f.split(b"\n", 1)[0] for f in out[:-1]]
    assert ids == [b"id: " + format_offset(n).encode() for n in (3, 5, 7, 8, 10, 11, 12)]
    chunks = [data(f) for f in out[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[2:4]] == ["Hel", "lo"]
    assert chunks[4]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "c1", "type": "function",
         "function": {"name": "f", "arguments": '{"a":1}'}}
    ]  # fmt: skip
    assert chunks[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[6]["choices"] == [] and chunks[6]["usage"]["total_tokens"] == 8
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert {c["created"] for c in chunks} == {1700000000}
    assert out[-1] == b"data: [DONE]\n\n"


def test_a_replay_from_an_offset_writes_what_the_first_reader_got_from_there() -> None:
    events = run_events()
    first = frames(ChunkMapper(GatewaySpec("m")), events)
    again = ChunkMapper(GatewaySpec("m"))
    replayed = [again.frame(p, e) for p, e in enumerate(events, 1)]
    assert [f for f in replayed if f] == first[:-1]
    assert again.last() == first[-1]


def test_the_whole_completion_of_a_run() -> None:
    mapper = ChunkMapper(GatewaySpec("openai/gpt"), frames=False)
    assert frames(mapper, run_events()) == [b"data: [DONE]\n\n"]  # nothing encoded
    assert mapper.ok
    completion = mapper.completion()
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello",
        "refusal": None,
        "reasoning_content": "hmm",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    }
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_a_failed_run_ends_with_an_error_and_no_done() -> None:
    mapper = ChunkMapper(GatewaySpec("m"))
    out = frames(mapper, run_events(error="UpstreamRateLimited"))
    assert out[-1] == b""  # no [DONE]
    assert data(out[-2]) == {
        "error": {
            "message": "upstream said no",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert mapper.error is not None and mapper.error.status == 429
    assert not mapper.ok


def test_events_of_other_runs_and_seeded_history_make_nothing() -> None:
    mapper = ChunkMapper(GatewaySpec("m"))
    stray = ev.event(ev.PART_DELTA, run_id="run_0", part_id="p2", delta="x")
    assert mapper.frame(1, orjson.dumps(stray)) == b""
    assert not mapper.finished
