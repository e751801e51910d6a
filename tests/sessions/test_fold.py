"""The fold turns a session's events into its conversation tree."""

from __future__ import annotations

from tether.sessions import events as ev
from tether.sessions.fold import SessionFold


def user(mid: str, text: str, parent: str | None = None, **extra: object) -> ev.Event:
    return ev.event(
        ev.USER_MESSAGE, message_id=mid, parent_id=parent, parts=[{"type": "text", "text": text}],
        **extra,
    )  # fmt: skip


def answer(run: str, mid: str, parent: str, text: str, reason: str = ev.COMPLETE) -> list[ev.Event]:
    pid = f"{mid}:1"
    out = [
        ev.event(ev.RUN_START, run_id=run, trigger=parent),
        ev.event(ev.MESSAGE_START, run_id=run, message_id=mid, role="assistant", parent_id=parent),
        ev.event(ev.PART_START, run_id=run, message_id=mid, part_id=pid, kind=ev.TEXT),
    ]
    out += [ev.event(ev.PART_DELTA, run_id=run, part_id=pid, delta=c) for c in text]
    if reason == ev.COMPLETE:
        out += [
            ev.event(ev.PART_END, run_id=run, part_id=pid),
            ev.event(ev.MESSAGE_END, run_id=run, message_id=mid),
        ]
    out.append(ev.event(ev.RUN_END, run_id=run, reason=reason))
    return out


def folded(events: list[ev.Event]) -> SessionFold:
    fold = SessionFold()
    fold.apply_all(events)
    return fold


def test_deltas_fold_into_complete_messages_on_the_current_branch() -> None:
    fold = folded([user("u1", "hi"), *answer("r1", "a1", "u1", "hello")])
    snap = fold.snapshot()
    assert [(m["id"], m["role"], m["status"]) for m in snap["messages"]] == [
        ("u1", "user", "complete"),
        ("a1", "assistant", "complete"),
    ]
    assert snap["messages"][1]["parts"][0]["text"] == "hello"
    assert snap["status"] == ev.IDLE and snap["active_run"] is None


def test_a_partial_message_shows_as_streaming_while_its_run_is_active() -> None:
    events = [user("u1", "hi"), *answer("r1", "a1", "u1", "hel")][:-1]  # no run-end yet
    fold = folded(events[:-2])  # stop mid-message
    snap = fold.snapshot()
    assert snap["status"] == ev.RUNNING
    assert snap["active_run"]["run_id"] == "r1"
    assert snap["messages"][-1]["status"] == "streaming"


def test_snapshot_plus_the_rest_equals_the_whole_with_nothing_twice() -> None:
    events = [user("u1", "hi"), *answer("r1", "a1", "u1", "hello world")]
    whole = folded(events).snapshot()
    for cut in range(len(events) + 1):
        late = folded(events[:cut])
        late.apply_all(events[cut - 2 if cut >= 2 else 0 :])  # overlap: replays are ignored
        assert late.snapshot() == whole, cut


def test_editing_a_user_message_makes_a_sibling_branch() -> None:
    fold = folded(
        [
            user("u1", "first"),
            *answer("r1", "a1", "u1", "one"),
            user("u2", "edited", None, edit_of="u1"),
            *answer("r2", "a2", "u2", "two"),
        ]
    )
    branch = fold.snapshot()["messages"]
    assert [m["id"] for m in branch] == ["u2", "a2"]
    assert branch[0]["siblings"] == ["u1", "u2"]
    assert [m.id for m in fold.branch("a1")] == ["u1", "a1"]


def test_regenerating_adds_an_answer_beside_the_old_one() -> None:
    fold = folded(
        [user("u1", "q"), *answer("r1", "a1", "u1", "old"), *answer("r2", "a2", "u1", "new")]
    )
    branch = fold.snapshot()["messages"]
    assert [m["id"] for m in branch] == ["u1", "a2"]
    assert branch[1]["siblings"] == ["a1", "a2"]


def test_a_cancelled_run_leaves_its_message_cancelled() -> None:
    fold = folded([user("u1", "q"), *answer("r1", "a1", "u1", "par", reason=ev.CANCELLED)])
    msg = fold.snapshot()["messages"][1]
    assert msg["status"] == ev.CANCELLED
    assert msg["parts"][0]["text"] == "par"
    assert all(p["done"] for p in msg["parts"])


def test_retry_discards_what_the_failed_attempt_streamed() -> None:
    events = answer("r1", "a1", "u1", "xx")[:4]  # run, message, part, one delta
    events.append(
        ev.event(ev.RETRY, run_id="r1", attempt=1, delay_ms=10, error="503", discard=["a1:1"])
    )
    fold = folded([user("u1", "q"), *events])
    assert fold.messages["a1"].parts == []


def test_tool_results_and_approvals_attach_to_their_call() -> None:
    fold = folded(
        [
            user("u1", "q"),
            ev.event(
                ev.MESSAGE_START, run_id="r", message_id="a1", role="assistant", parent_id="u1"
            ),
            ev.event(
                ev.PART_START, run_id="r", message_id="a1", part_id="a1:1", kind=ev.TOOL_CALL,
                tool_call_id="c1", tool_name="search",
            ),
            ev.event(ev.PART_END, run_id="r", part_id="a1:1", value={"q": "x"}),
            ev.event(ev.TOOL_APPROVAL, tool_call_id="c1", approved=True),
            ev.event(ev.TOOL_RESULT, tool_call_id="c1", output={"hits": 3}),
        ]
    )  # fmt: skip
    part = fold.snapshot()["messages"][1]["parts"][0]
    assert part["tool_name"] == "search" and part["value"] == {"q": "x"}
    assert part["approval"] == {"approved": True, "reason": None}
    assert part["result"] == {"hits": 3}


def test_queue_updates_replace_the_queue() -> None:
    fold = folded(
        [
            ev.event(ev.QUEUE_UPDATE, queue=[{"run_id": "r2"}, {"run_id": "r3"}]),
            ev.event(ev.QUEUE_UPDATE, queue=[{"run_id": "r3"}]),
        ]
    )
    assert fold.snapshot()["queue"] == [{"run_id": "r3"}]
