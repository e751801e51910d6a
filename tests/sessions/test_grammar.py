"""The grammar checker (tests/sessions/grammar.py) rejects the logs docs/events.md forbids.

Without these, a contract test that passes could be a checker that accepts
anything. Each case breaks one rule of a valid log and expects that rule named.
"""

from __future__ import annotations

from typing import Any

import pytest

from sessions.grammar import violations
from tether.sessions import events as ev

Event = dict[str, Any]


def e(kind: str, /, **fields: Any) -> Event:
    return ev.event(kind, **fields)


def run(run_id: str = "r1", trigger: str = "u1", mid: str = "a1") -> list[Event]:
    """A valid run answering ``trigger`` with one text part."""
    pid = f"{mid}:1"
    return [
        e(ev.RUN_START, run_id=run_id, trigger=trigger, model="demo"),
        e(ev.STATUS, status=ev.RUNNING),
        e(ev.MESSAGE_START, run_id=run_id, message_id=mid, role="assistant", parent_id=trigger),
        e(ev.PART_START, run_id=run_id, message_id=mid, part_id=pid, kind=ev.TEXT),
        e(ev.PART_DELTA, run_id=run_id, part_id=pid, delta="hi"),
        e(ev.PART_END, run_id=run_id, part_id=pid),
        e(ev.MESSAGE_END, run_id=run_id, message_id=mid, status="complete"),
        e(ev.RUN_END, run_id=run_id, reason=ev.COMPLETE),
        e(ev.STATUS, status=ev.IDLE),
    ]


def failed(run_id: str = "r1", trigger: str = "u1", mid: str = "a1") -> list[Event]:
    """A valid run answering ``trigger`` that fails: the session's status is then ``error``."""
    return [
        *run(run_id, trigger, mid)[:3],
        e(ev.ERROR, run_id=run_id, code="X", message="m"),
        e(ev.RUN_END, run_id=run_id, reason=ev.FAILED),
        e(ev.STATUS, status=ev.ERRORED),
    ]


def user(mid: str = "u1", parent: str | None = None) -> Event:
    parts = [{"type": "text", "text": "x"}]
    return e(ev.USER_MESSAGE, message_id=mid, parent_id=parent, parts=parts)


QUEUED = {"run_id": "r1", "kind": "message", "message_id": "u1"}


def without(events: list[Event], kind: str) -> list[Event]:
    return [x for x in events if x["type"] != kind]


def test_a_valid_log_has_no_violation() -> None:
    assert violations([user(), *run(), user("u2", "a1"), *run("r2", "u2", "a2")]) == []


def test_a_failed_run_leaves_the_status_error_until_the_next_run() -> None:
    assert violations([user(), *failed(), user("u2", "u1"), *run("r2", "u2", "a2")]) == []


@pytest.mark.parametrize(
    ("log", "named"),
    [
        (
            [user(), *run()[:6], e(ev.PART_DELTA, run_id="r1", part_id="a1:1", delta="x")],
            "is not open",
        ),
        ([user(), *without(run(), ev.MESSAGE_END)], "without its message-end"),
        ([user(), *run()[:-1]], "must follow"),
        ([user(), *run(), e(ev.RUN_END, run_id="r1", reason=ev.COMPLETE)], "second run-end"),
        ([user(), *run()[:4], *run("r2")], "while run r1 is active"),
        ([user(), e(ev.RUN_END, run_id="r9", reason=ev.CANCELLED)], "never started"),
        ([user(), *run()[:4], e(ev.ERROR, run_id="r1", code="X", message="m")], "must follow"),
        ([user(), *run()[:4]], "still active"),
        ([user(), *run()[:2], e(ev.STATUS, status=ev.IDLE)], "status idle while"),
        ([user(), *run(trigger="u0")], "unknown message"),
        ([user(), e(ev.PART_DELTA, run_id="r1", part_id="p", delta="x")], "not the active run"),
        ([user(), *run(), e(ev.QUEUE_UPDATE, queue=[QUEUED])], "queued after"),
        ([user(), *run()[:2], e(ev.STATUS, status=ev.ERRORED)], "status error while"),
        ([user(), *failed()[:-1], e(ev.STATUS, status=ev.IDLE)], "must follow"),
        ([user(), *run()[:-1], e(ev.STATUS, status=ev.ERRORED)], "must follow"),
        (
            [user(), *run()[:3], e(ev.CONTEXT_TRIM, run_id="r1", dropped=0, tokens=5, budget=9)],
            "context-trim without a whole number dropped",
        ),
        (
            [user(), e(ev.CONTEXT_TRIM, run_id="r1", dropped=2, tokens=5, budget=9)],
            "not the active",
        ),
    ],
)
def test_a_broken_rule_is_named(log: list[Event], named: str) -> None:
    assert any(named in v for v in violations(log)), violations(log)


def test_an_event_written_twice_is_named() -> None:
    log = [user(), *run()]
    log.insert(5, log[4])
    assert any("unique id" in v for v in violations(log))


def test_tool_answers_must_answer_a_call_that_asked_for_them() -> None:
    call = [
        *run()[:3],
        e(ev.PART_START, run_id="r1", message_id="a1", part_id="a1:1", kind=ev.TOOL_CALL,
          tool_call_id="c1", tool_name="t"),
        e(ev.PART_END, run_id="r1", part_id="a1:1", value={}),
    ]  # fmt: skip
    approval = e(ev.TOOL_APPROVAL, tool_call_id="c1", approved=True)
    assert any("asked none" in v for v in violations([user(), *call, approval], finished=False))
    result = e(ev.TOOL_RESULT, tool_call_id="c1", output=1)
    assert violations([user(), *call, result], finished=False) == []
    assert any("second" in v for v in violations([user(), *call, result, result], finished=False))


def test_a_log_cut_mid_run_is_valid_when_not_finished() -> None:
    assert violations([user(), *run()[:5]], finished=False) == []


def test_client_answers_must_answer_a_request_of_the_log_once() -> None:
    asked = e(ev.CLIENT_REQUEST, request_id="q1", method="confirm", params={"message": "?"})
    answer = e(ev.CLIENT_RESPONSE, request_id="q1", result={"confirmed": True})
    assert violations([asked, answer]) == []
    again = e(ev.CLIENT_RESPONSE, request_id="q1", result={"confirmed": False})
    assert any("second client-response" in v for v in violations([asked, answer, again]))
    stray = e(ev.CLIENT_RESPONSE, request_id="q9", result=1)
    assert any("unknown request" in v for v in violations([stray]))
    both = e(ev.CLIENT_RESPONSE, request_id="q1", result=1, error={"code": 1, "message": "m"})
    assert any("both a result and an error" in v for v in violations([asked, both]))
    loose = e(ev.CLIENT_RESPONSE, request_id="q1", error={"message": "m"})
    assert any("not {code, message}" in v for v in violations([asked, loose]))
    assert any("without a new request_id" in v for v in violations([asked, asked | {"id": "x"}]))
