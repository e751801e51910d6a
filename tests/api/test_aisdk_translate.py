"""A run's events as the AI SDK's UI message stream: pure, no HTTP (tether.api.aisdk.translate)."""

from __future__ import annotations

from typing import Any

import orjson

from tether.api.aisdk.translate import RunTranslator, UIFrames
from tether.sessions import events as ev

R = "run_1"


def feed(translator: RunTranslator, *events: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for e in events for c in translator.feed(e)]


def test_a_run_with_text_and_an_answered_tool_call_opens_a_second_step() -> None:
    t = RunTranslator(R, "ses_1")
    chunks = feed(
        t,
        ev.event(ev.USER_MESSAGE, message_id="msg_u", parts=[]),  # not the run's: ignored
        ev.event(ev.RUN_START, run_id=R),
        ev.event(ev.MESSAGE_START, run_id=R, message_id="msg_a", role="assistant"),
        ev.event(ev.PART_START, run_id=R, message_id="msg_a", part_id="p1", kind=ev.TOOL_CALL,
                 tool_call_id="c1", tool_name="f"),
        ev.event(ev.PART_END, run_id=R, part_id="p1", value={"x": 1}),
        ev.event(ev.TOOL_RESULT, tool_call_id="c1", output="ok"),
        ev.event(ev.PART_START, run_id=R, message_id="msg_a", part_id="p2", kind=ev.TEXT),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p2", delta="done"),
        ev.event(ev.RUN_END, run_id=R, reason=ev.COMPLETE),
    )  # fmt: skip
    assert [c["type"] for c in chunks] == [
        "start", "start-step", "tool-input-start", "tool-input-available",
        "tool-output-available", "finish-step", "start-step", "text-start", "text-delta",
        "text-end", "finish-step", "finish",
    ]  # fmt: skip
    assert chunks[0] == {
        "type": "start",
        "messageId": "msg_a",
        "messageMetadata": {"tether": {"sessionId": "ses_1", "runId": R}},
    }
    assert t.done
    assert feed(t, ev.event(ev.PART_DELTA, run_id=R, part_id="p2", delta="late")) == []


def test_a_tool_calls_streamed_arguments_are_tool_input_deltas() -> None:
    t = RunTranslator(R, "ses_1")
    chunks = feed(
        t,
        ev.event(ev.RUN_START, run_id=R),
        ev.event(ev.MESSAGE_START, run_id=R, message_id="msg_a", role="assistant"),
        ev.event(ev.PART_START, run_id=R, message_id="msg_a", part_id="p1", kind=ev.TOOL_CALL,
                 tool_call_id="c1", tool_name="f"),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p1", delta='{"x": '),
        ev.event(ev.PART_DELTA, run_id=R, part_id="p1", delta="1}"),
        ev.event(ev.PART_END, run_id=R, part_id="p1", value={"x": 1}),
    )  # fmt: skip
    assert chunks[2:] == [
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "f"},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"x": '},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": "1}"},
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "f", "input": {"x": 1}},
    ]


def test_a_run_cancelled_while_queued_is_started_and_aborted() -> None:
    t = RunTranslator(R, "ses_1")
    assert feed(t, ev.event(ev.CANCEL, run_id=R)) == [
        {"type": "start"},
        {"type": "abort", "reason": ev.CANCELLED},
    ]
    assert t.done


def test_a_failed_run_ends_its_open_parts_then_errors() -> None:
    t = RunTranslator(R, "ses_1")
    chunks = feed(
        t,
        ev.event(ev.MESSAGE_START, run_id=R, message_id="msg_a", role="assistant"),
        ev.event(ev.PART_START, run_id=R, message_id="msg_a", part_id="p1", kind=ev.REASONING),
        ev.event(ev.ERROR, run_id=R, code="ProviderError", message="upstream down"),
        ev.event(ev.RUN_END, run_id=R, reason=ev.FAILED),
    )
    assert [c["type"] for c in chunks] == [
        "start", "start-step", "reasoning-start", "reasoning-end", "error", "finish-step", "finish",
    ]  # fmt: skip
    assert chunks[4]["errorText"] == "upstream down"
    assert chunks[-1]["finishReason"] == "error"


def test_ui_frames_write_sse_remember_the_run_start_and_end_with_done() -> None:
    starts: list[int] = []
    frames = UIFrames(RunTranslator(R, "ses_1"), starts.append)
    events = [
        ev.event(ev.RUN_START, run_id=R),
        ev.event(ev.MESSAGE_START, run_id=R, message_id="msg_a", role="assistant"),
        ev.event(ev.RUN_END, run_id=R, reason=ev.COMPLETE),
    ]
    written = [frames.frame(p, orjson.dumps(e)) for p, e in enumerate(events, 5)]
    assert starts == [4]  # the position of the run-start itself (the offset before it)
    assert written[0] == b""
    assert written[1].startswith(b'data: {"type":"start",') and written[1].endswith(b"\n\n")
    assert written[1].count(b"data: ") == 2  # start, start-step
    assert frames.finished
    assert frames.last() == b"data: [DONE]\n\n"
