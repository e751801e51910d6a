"""A run's session events as the Responses API's stream: pure, no HTTP
(tether.api.responses_api.events)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tether.agents.gateway import GatewaySpec
from tether.api.responses_api.events import ResponseTranslator
from tether.api.responses_api.request import Settings
from tether.sessions import events as ev

SID, RID = "ses_" + "1" * 22, "run_" + "2" * 22


def run_events(run_id: str = RID, *, end: str = ev.COMPLETE) -> list[dict[str, Any]]:
    """A run: reasoning, text, a tool call placed whole, then its end."""
    m = "msg_a" + run_id[-3:]
    es = [
        ev.event(ev.USER_MESSAGE, message_id="msg_u", parts=[{"type": "text", "text": "hi"}]),
        ev.event(ev.RUN_START, run_id=run_id, ts=1700000000.5),
        ev.event(ev.MESSAGE_START, run_id=run_id, message_id=m, role="assistant"),
        ev.event(ev.PART_START, run_id=run_id, message_id=m, part_id=f"{m}:1", kind=ev.REASONING),
        ev.event(ev.PART_DELTA, run_id=run_id, part_id=f"{m}:1", delta="hmm"),
        ev.event(ev.PART_END, run_id=run_id, part_id=f"{m}:1"),
        ev.event(ev.PART_START, run_id=run_id, message_id=m, part_id=f"{m}:2", kind=ev.TEXT),
        ev.event(ev.PART_DELTA, run_id=run_id, part_id=f"{m}:2", delta="Hel"),
        ev.event(ev.PART_DELTA, run_id=run_id, part_id=f"{m}:2", delta="lo"),
        ev.event(ev.PART_END, run_id=run_id, part_id=f"{m}:2"),
        ev.event(ev.PART_START, run_id=run_id, message_id=m, part_id=f"{m}:3",
                 kind=ev.TOOL_CALL, tool_call_id="call_1", tool_name="f"),
        ev.event(ev.PART_END, run_id=run_id, part_id=f"{m}:3", value={"a": 1}),
    ]  # fmt: skip
    if end == ev.COMPLETE:
        usage = {"input_tokens": 10, "output_tokens": 7, "cache_read_tokens": 4,
                 "reasoning_tokens": 2}  # fmt: skip
        es.append(ev.event(ev.MESSAGE_END, run_id=run_id, message_id=m, usage=usage))
    elif end == ev.FAILED:
        es.append(
            ev.event(ev.ERROR, run_id=run_id, code="UpstreamRateLimited", message="slow down")
        )
    es.append(ev.event(ev.RUN_END, run_id=run_id, reason=end))
    return es


def translator(**kw: Any) -> ResponseTranslator:
    spec = GatewaySpec(model="demo", tools=[{"name": "f", "description": "", "parameters": {}}])
    return ResponseTranslator(spec, Settings(instructions="Be brief."), SID, RID, **kw)


def read(t: ResponseTranslator, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream events written for ``events``, parsed back from their SSE frames."""
    out: list[dict[str, Any]] = []
    for position, e in enumerate(events, 1):
        written = t.frame(position, orjson.dumps(e))
        for frame in filter(None, written.split(b"\n\n")):
            head, data = frame.split(b"\n", 1)
            parsed = orjson.loads(data.removeprefix(b"data: "))
            assert head == b"event: " + parsed["type"].encode()
            out.append(parsed)
        if t.finished:
            assert t.last() == b""
            break
    return out


def test_a_runs_events_become_the_typed_stream_numbered_from_zero() -> None:
    out = read(translator(), run_events())
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    assert out[12]["text"] == "Hello" and out[17]["arguments"] == '{"a":1}'
    call = out[18]["item"]
    assert call == {
        "id": "fc_a222_3", "type": "function_call", "status": "completed",
        "call_id": "call_1", "name": "f", "arguments": '{"a":1}',
    }  # fmt: skip
    done = out[-1]["response"]
    assert done["id"] == "resp_" + "1" * 22 + "2" * 22 and done["status"] == "completed"
    assert done["created_at"] == 1700000000 and done["instructions"] == "Be brief."
    assert [i["type"] for i in done["output"]] == ["reasoning", "message", "function_call"]
    assert done["output"][1]["content"][0]["text"] == "Hello"
    assert done["output"][0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert done["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 17,
    }
    assert done["tools"][0]["type"] == "function" and done["tools"][0]["name"] == "f"


def test_only_its_own_run_counts_and_the_numbers_do_not_depend_on_where_reading_starts() -> None:
    other = "run_" + "9" * 22
    session = run_events(other) + run_events()
    from_start = read(translator(), session)
    from_run = read(translator(), run_events())
    assert from_start == from_run
    assert {e["response"]["id"] for e in from_start if "response" in e} == {
        "resp_" + "1" * 22 + "2" * 22
    }


@pytest.mark.parametrize("n", [-1, 0, 5, 11, 18])
def test_starting_after_n_writes_exactly_the_events_after_n(n: int) -> None:
    whole = read(translator(), run_events())
    resumed = read(translator(starting_after=n), run_events())
    assert resumed == whole[n + 1 :]
    assert [e["sequence_number"] for e in resumed] == list(range(n + 1, len(whole)))


def test_a_failed_run_ends_with_response_failed_and_its_error() -> None:
    t = translator()
    out = read(t, run_events(end=ev.FAILED))
    assert out[-1]["type"] == "response.failed"
    failed = out[-1]["response"]
    assert failed["status"] == "failed" and failed["usage"] is None
    assert failed["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    err = t.http_error()
    assert err is not None and err.status == 429


def test_a_cancelled_run_ends_incomplete_with_status_cancelled() -> None:
    t = translator()
    out = read(t, run_events(end=ev.CANCELLED))
    assert out[-1]["type"] == "response.incomplete"
    assert out[-1]["response"]["status"] == "cancelled" and t.http_error() is None


def test_a_run_cancelled_while_queued_still_makes_a_whole_stream() -> None:
    out = read(translator(), [ev.event(ev.RUN_END, run_id=RID, reason=ev.CANCELLED)])
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.incomplete",
    ]


def test_an_object_read_mid_run_is_in_progress_with_what_came_so_far() -> None:
    t = translator(frames=False)
    for position, e in enumerate(run_events()[:8], 1):
        assert t.frame(position, orjson.dumps(e)) == b""
    obj = t.response()
    assert obj["status"] == "in_progress" and obj["usage"] is None
    assert obj["output"][1] == {
        "id": "msg_a222_2", "type": "message", "status": "in_progress", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hel", "annotations": [], "logprobs": []}],
    }  # fmt: skip
    assert translator().response()["status"] == "queued"


def test_the_sdk_parses_every_event_and_the_response() -> None:
    """The official openai package's own types accept what the translator writes."""
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    out = read(translator(), run_events())
    for e in out:
        adapter.validate_python(e)
    done = Response.model_validate(out[-1]["response"])
    assert done.output_text == "Hello"
