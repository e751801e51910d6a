"""What a follow-up (previous_response_id) may add to a conversation: pure checks
(tether.api.responses_api.follow_up)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.agents.gateway import GatewaySpec
from tether.api.completion import Completion
from tether.api.openai.errors import OpenAIError
from tether.api.responses_api.follow_up import check_follow_up
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold

RUN = "run_1"


def fold(*, answered: dict[str, Any] | None = None, running: bool = False) -> SessionFold:
    """A conversation whose run ``run_1`` answered with two function calls."""
    f = SessionFold()
    f.apply_all(
        [
            ev.event(ev.USER_MESSAGE, message_id="msg_u", parts=[{"type": "text", "text": "hi"}]),
            ev.event(ev.RUN_START, run_id=RUN, trigger="msg_u", model="m", worker="w"),
            ev.event(ev.MESSAGE_START, run_id=RUN, message_id="msg_a", role="assistant",
                     parent_id="msg_u"),
            ev.event(ev.PART_START, run_id=RUN, message_id="msg_a", part_id="msg_a:1",
                     kind=ev.TOOL_CALL, tool_call_id="c1", tool_name="f"),
            ev.event(ev.PART_END, run_id=RUN, part_id="msg_a:1", value={}),
            ev.event(ev.PART_START, run_id=RUN, message_id="msg_a", part_id="msg_a:2",
                     kind=ev.TOOL_CALL, tool_call_id="c2", tool_name="f"),
            ev.event(ev.PART_END, run_id=RUN, part_id="msg_a:2", value={}),
            ev.event(ev.MESSAGE_END, run_id=RUN, message_id="msg_a", status="complete"),
            ev.event(ev.RUN_END, run_id=RUN, reason=ev.COMPLETE),
        ]
    )  # fmt: skip
    for call_id, output in (answered or {}).items():
        f.apply(ev.event(ev.TOOL_RESULT, tool_call_id=call_id, output=output))
    if running:
        f.apply(ev.event(ev.RUN_START, run_id="run_2", trigger="msg_a", model="m", worker="w"))
    return f


def follow_up(
    results: dict[str, str], *, send: bool = False, system: str | None = None
) -> Completion:
    req = Completion(
        GatewaySpec(model="m"), system, [], [{"type": "text", "text": "next"}] if send else None
    )
    req.results = [{"tool_call_id": c, "output": o} for c, o in results.items()]
    return req


def refused(f: SessionFold, req: Completion, system: str | None = None) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        check_follow_up(f, RUN, "resp_x", req, system)
    return caught.value


def test_outputs_for_every_call_continue_after_the_answer() -> None:
    req = follow_up({"c1": "one", "c2": "two"})
    check_follow_up(fold(), RUN, "resp_x", req, None)
    assert req.parent_id == "msg_a" and len(req.results) == 2


def test_a_call_left_unanswered_is_refused_naming_it() -> None:
    err = refused(fold(), follow_up({"c1": "one"}, send=True))
    assert err.status == 400 and "c2" in err.body["message"]


def test_an_output_for_a_call_the_response_did_not_make_is_refused() -> None:
    err = refused(fold(), follow_up({"c1": "one", "c2": "two", "c9": "?"}))
    assert "c9" in err.body["message"]


def test_on_a_branch_the_same_outputs_are_not_written_again_and_other_ones_are_refused() -> None:
    answered = fold(answered={"c1": "one", "c2": "two"})
    req = follow_up({"c1": "one", "c2": "two"}, send=True)
    check_follow_up(answered, RUN, "resp_x", req, None)
    assert req.results == [] and req.parent_id == "msg_a"
    assert "already" in refused(answered, follow_up({"c1": "uno"})).body["message"]


def test_the_conversations_instructions_may_be_repeated_or_left_out_not_changed() -> None:
    done = fold(answered={"c1": "1", "c2": "2"})
    check_follow_up(done, RUN, "resp_x", follow_up({}, send=True, system="Be brief."), "Be brief.")
    check_follow_up(done, RUN, "resp_x", follow_up({}, send=True), "Be brief.")
    err = refused(done, follow_up({}, send=True, system="Be long."), "Be brief.")
    assert err.body["param"] == "instructions"


def test_nothing_continues_while_a_run_of_the_conversation_is_going() -> None:
    err = refused(fold(answered={"c1": "1", "c2": "2"}, running=True), follow_up({}, send=True))
    assert err.status == 409 and err.body["code"] == "response_in_progress"
