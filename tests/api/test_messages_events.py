"""A gateway session's events as Anthropic's stream (tether.api.anthropic_api.events): pure."""

from __future__ import annotations

from typing import Any

import orjson

from tether.api.anthropic_api.events import MessageMapper
from tether.sessions import events as ev
from tether.streams.wire import format_offset

R = "run_1"


def run_events(*, error: str | None = None) -> list[bytes]:
    """A run: signed reasoning, redacted reasoning, text, a streamed and a placed tool call."""
    part = {"run_id": R, "message_id": "msg_a"}
    es: list[dict[str, Any]] = [
        ev.event(ev.USER_MESSAGE, message_id="msg_u", parts=[{"type": "text", "text": "hi"}]),
        ev.event(ev.RUN_START, run_id=R),
        ev.event(ev.MESSAGE_START, run_id=R, message_id="msg_a", role="assistant"),
        ev.event(ev.PART_START, **part, part_id="p1", kind=ev.REASONING),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p1", delta="hmm"),
        ev.event(ev.PART_END, run_id=R, part_id="p1", signature="sig-1"),
        ev.event(ev.PART_START, **part, part_id="p2", kind=ev.REASONING),
        ev.event(ev.PART_END, run_id=R, part_id="p2", redacted="ENC"),
        ev.event(ev.PART_START, **part, part_id="p3", kind=ev.TEXT),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p3", delta="Hel"),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p3", delta="lo"),
        ev.event(ev.PART_END, run_id=R, part_id="p3"),
        ev.event(
            ev.PART_START, **part, part_id="p4", kind=ev.TOOL_CALL, tool_call_id="t1", tool_name="f"
        ),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p4", delta='{"a":'),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p4", delta=" 1}"),
        ev.event(ev.PART_END, run_id=R, part_id="p4", value={"a": 1}),
        ev.event(
            ev.PART_START, **part, part_id="p5", kind=ev.TOOL_CALL, tool_call_id="t2", tool_name="g"
        ),
        ev.event(ev.PART_END, run_id=R, part_id="p5", value={"b": 2}),
    ]
    if error is not None:
        es.append(ev.event(ev.ERROR, run_id=R, code=error, message="upstream said no"))
        es.append(ev.event(ev.RUN_END, run_id=R, reason=ev.FAILED))
    else:
        usage = {
            "input_tokens": 100,
            "output_tokens": 9,
            "cache_read_tokens": 60,
            "cache_write_tokens": 10,
        }
        es.append(ev.event(ev.MESSAGE_END, run_id=R, message_id="msg_a", usage=usage))
        es.append(ev.event(ev.RUN_END, run_id=R, reason=ev.COMPLETE))
    return [orjson.dumps(e) for e in es]


def streamed(
    mapper: MessageMapper, events: list[bytes], after: int = 0
) -> list[tuple[str, int, dict[str, Any]]]:
    """(event name, position, data) of each SSE frame written for events after ``after``;
    checks that the last frame of each event, and only it, has the ``id:`` of its position."""
    out = []
    for position, event in enumerate(events, 1):
        written = mapper.frame(position, event)
        if written and position > after:
            frames = written.decode().split("\n\n")[:-1]
            for i, frame in enumerate(frames):
                lines = frame.split("\n")
                if i == len(frames) - 1:
                    assert lines.pop(1) == f"id: {format_offset(position)}"
                name, data = lines
                out.append(
                    (
                        name.removeprefix("event: "),
                        position,
                        orjson.loads(data.removeprefix("data: ")),
                    )
                )
        if mapper.finished:
            break
    return out


def test_a_run_streams_as_anthropics_event_sequence() -> None:
    frames = streamed(MessageMapper("claude"), run_events())
    names = [name for name, _, data in frames]
    for name, _, data in frames:
        assert data["type"] == name
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = frames[0][2]["message"]
    assert (start["id"], start["model"], start["role"], start["content"]) == (
        "msg_1",
        "claude",
        "assistant",
        [],
    )
    deltas = [d["delta"] for _, _, d in frames if d["type"] == "content_block_delta"]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "hmm"},
        {"type": "signature_delta", "signature": "sig-1"},
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
        {"type": "input_json_delta", "partial_json": '{"a":'},
        {"type": "input_json_delta", "partial_json": " 1}"},
        {"type": "input_json_delta", "partial_json": '{"b":2}'},
    ]
    starts = [d["content_block"] for _, _, d in frames if d["type"] == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "redacted_thinking", "data": "ENC"},
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
    ]
    assert [d["index"] for _, _, d in frames if d["type"] == "content_block_stop"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    delta = frames[-2][2]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 30,
        "output_tokens": 9,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 60,
    }


def test_the_whole_message_of_a_run() -> None:
    mapper = MessageMapper("claude", frames=False)
    assert streamed(mapper, run_events()) == []
    assert mapper.ok
    message = mapper.whole()
    assert message["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "ENC"},
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "t2", "name": "g", "input": {"b": 2}},
    ]
    assert (message["type"], message["stop_reason"], message["usage"]["input_tokens"]) == (
        "message",
        "tool_use",
        30,
    )


def test_stop_reasons_end_turn_and_max_tokens() -> None:
    def run(output: int, max_tokens: int) -> str:
        es = [
            ev.event(ev.RUN_START, run_id=R),
            ev.event(ev.MESSAGE_START, run_id=R, message_id="m", role="assistant"),
            ev.event(
                ev.MESSAGE_END,
                run_id=R,
                message_id="m",
                usage={"input_tokens": 1, "output_tokens": output},
            ),
            ev.event(ev.RUN_END, run_id=R, reason=ev.COMPLETE),
        ]
        mapper = MessageMapper("c", max_tokens=max_tokens, frames=False)
        streamed(mapper, [orjson.dumps(e) for e in es])
        return str(mapper.whole()["stop_reason"])

    assert run(5, 100) == "end_turn"
    assert run(100, 100) == "max_tokens"


def test_a_failed_run_ends_with_an_error_event_in_anthropics_shape() -> None:
    frames = streamed(MessageMapper("claude"), run_events(error="UpstreamRateLimited"))
    name, _, data = frames[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "upstream said no"},
    }
    assert "message_stop" not in [n for n, _, _ in frames]


def test_a_cancelled_run_ends_with_an_api_error() -> None:
    es = [*run_events()[:5], orjson.dumps(ev.event(ev.RUN_END, run_id=R, reason=ev.CANCELLED))]
    mapper = MessageMapper("claude")
    frames = streamed(mapper, es)
    assert frames[-1][2]["error"]["type"] == "api_error"
    assert not mapper.ok


def test_a_resumed_reader_writes_exactly_what_came_after_its_offset() -> None:
    """Replaying the events up to an offset writes nothing; the rest comes once, and the
    frames are byte for byte those of a reader that never left."""
    events = run_events()
    whole = streamed(MessageMapper("claude"), events)
    for cut in range(len(events)):
        rest = streamed(MessageMapper("claude"), events, after=cut)
        assert rest == [f for f in whole if f[1] > cut]
