"""Following a run that waits on a person: paused, suspended, resumed, taken up later.

A waiting run may be silent for hours (suspended on the server, across
restarts); a follower keeps following it until its one ``run-end``, with no
timeout and no made-up end, and a client that comes later takes it up from
the session's snapshot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.conftest import KEY, Server
from helpers.waiting import SUSPEND_MODES, approver_server
from tether.client import (
    Event,
    IdleTimeout,
    PartEnd,
    PartStart,
    RunEnd,
    RunResume,
    RunSuspend,
    SessionSnapshot,
    Status,
    Tether,
    ToolCall,
    parse_event,
)
from tether.client._follow import RunFollower
from tether.client._sse import SSEEvent


def sse(n: int, **data: object) -> SSEEvent:
    return SSEEvent(id=f"0000000000000000_{n:016d}", event="", data=json.dumps(data))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the follower, on a clock of its own --------------------------------------------------


def test_suspend_and_resume_are_typed_and_a_journal_is_never_handed_out() -> None:
    suspend = parse_event(
        {"type": "run-suspend", "run_id": "r", "waiting": [{"tool_call_id": "c", "for": "result"}]}
    )
    assert isinstance(suspend, RunSuspend) and suspend.waiting[0]["for"] == "result"
    resume = parse_event({"type": "run-resume", "run_id": "r", "worker": "w", "replayed": 3})
    assert isinstance(resume, RunResume) and resume.replayed == 3 and resume.worker == "w"

    f = RunFollower("r", None, "-1")
    assert f.accept(sse(1, type="run-start", run_id="r")) != []
    journal = {"type": "journal", "run_id": "r", "op": "model", "key": "k", "value": {}}
    assert f.accept(sse(2, **journal)) == []
    assert f.offset == "0000000000000000_0000000000000002"  # consumed, not lost


def test_a_suspended_run_stops_the_idle_clock_for_hours_and_a_resume_restarts_it() -> None:
    """Taken up after its run-start (say from an offset a caller kept): the suspend
    alone says the run waits."""
    clock = Clock()
    f = RunFollower("r", None, "0000000000000000_0000000000000004", idle_timeout=1.0, clock=clock)
    waiting = [{"tool_call_id": "c", "for": "approval"}]
    f.accept(sse(5, type="status", status="paused"))
    assert f.accept(sse(6, type="run-suspend", run_id="r", waiting=waiting)) != []
    assert f.deadline() is None
    clock.now += 10 * 3600
    f.check()  # ten hours of silence: no timeout
    assert not f.done and f.read_timeout() == f.liveness

    f.accept(sse(7, type="tool-approval", tool_call_id="c", approved=True))
    assert f.accept(sse(8, type="run-resume", run_id="r", worker="w2", replayed=2)) != []
    f.accept(sse(9, type="status", status="running"))
    clock.now += 1.5
    with pytest.raises(IdleTimeout):
        f.check()
    assert f.accept(sse(10, type="run-end", run_id="r", reason="complete")) != []
    assert f.done and f.state.result().reason == "complete" and not f.state.synthesized


# -- against a real server: a run that waits live (status paused) --------------------------


@pytest.fixture
def client(server: Server) -> Iterator[Tether]:
    with Tether(server.url, api_key=KEY) as c:
        yield c


def wait_paused(client: Tether, session_id: str) -> None:
    """Until the session says its run waits on a person."""
    for ev in client.events(session_id):
        if isinstance(ev, Status) and ev.status == "paused":
            return


def test_a_later_client_takes_up_a_waiting_run_from_the_snapshot(client: Tether) -> None:
    s = client.sessions.create(agent="approval")
    run = client.send(s.id, "rm")
    wait_paused(client, s.id)

    snap = client.sessions.get(s.id)
    (call,) = snap.waiting_calls()
    assert call == ToolCall(
        id=call.id, name="remove", arguments={"path": "/tmp/x"}, needs_approval=True,
        part_id=call.part_id,
    )  # fmt: skip
    later = client.attach(snap)
    assert later is not None and later.run_id == run.run_id
    # The call was asked before the snapshot: the handle answers it at once, then follows.
    handlers = {"remove": lambda path: f"ok:{path}"}
    result = later.result(tools=handlers, approve=True, first_event_timeout=0.5, idle_timeout=5)
    assert result.reason == "complete" and result.text == "removed=ok:/tmp/x"
    tool = next(p for p in result.parts if p.kind == "tool-call")
    assert tool.tool_call_id == call.id and tool.result == "ok:/tmp/x"
    assert tool.approval == {"approved": True, "reason": None}
    assert client.attach(client.sessions.get(s.id)) is None  # nothing active any more


def test_a_taken_up_waiting_run_outlasts_its_timeouts_until_someone_answers(
    client: Tether,
) -> None:
    s = client.sessions.create(agent="tools")
    client.send(s.id, "add")
    wait_paused(client, s.id)
    snap = client.sessions.get(s.id)
    (call,) = snap.waiting_calls()
    assert call.name == "add" and not call.needs_approval
    run = client.attach(snap)
    assert run is not None
    answer = threading.Timer(1.0, client.tool_result, (s.id, call.id, 7))  # > both timeouts
    answer.start()
    started = time.monotonic()
    events = list(run.stream(first_event_timeout=0.3, idle_timeout=0.3))
    answer.join()
    assert time.monotonic() - started >= 1.0
    assert [e for e in events if isinstance(e, RunEnd)] == [events[-1]]
    assert events[-1].reason == "complete" and not events[-1].synthesized
    # The call was in the snapshot: only what came after it is streamed.
    assert not any(isinstance(e, PartStart) and e.kind == "tool-call" for e in events)
    assert run.result().text == "sum=7"


# -- against real server processes: the run waits through a crash --------------------------


@pytest.mark.parametrize("suspend_after", SUSPEND_MODES)
def test_a_follower_follows_a_waiting_run_through_a_server_crash_to_its_one_end(
    tmp_path: Path, suspend_after: str
) -> None:
    """kill -9 while the run waits for an approval (live, or suspended in the log);
    on the restarted server the run is still open; another client takes it up
    from its snapshot and answers; the first follower, with a short idle
    timeout, sees the resumption and the one end."""
    first = approver_server(tmp_path / "data", suspend_after).start()
    servers = [first]
    answered: list[str] = []
    # Kill when the run waits: once its call is whole, or once it is suspended.
    waits = RunSuspend if float(suspend_after) < 60 else PartEnd

    def answer_from_elsewhere(base_url: str, session_id: str) -> None:
        with Tether(base_url) as other:
            run = other.attach(other.sessions.get(session_id))
            assert run is not None
            answered.append(run.text(tools={"delete_file": lambda path: "gone"}, approve=True))

    try:
        with Tether(first.base_url, reconnect_timeout=30) as client:
            session_id = client.sessions.create(agent="approver").id
            run = client.send(session_id, "clean up")
            events: list[Event] = []
            helper = None
            deadline = time.monotonic() + 15
            for ev in run.stream(idle_timeout=1.0):
                events.append(ev)
                assert time.monotonic() < deadline, [e.type for e in events[-6:]]
                if isinstance(ev, waits) and helper is None:
                    first.kill()
                    restarted = approver_server(tmp_path / "data", suspend_after, first.port, 1)
                    servers.append(restarted.start())
                    helper = threading.Thread(
                        target=answer_from_elsewhere, args=(first.base_url, session_id)
                    )
                    helper.start()
            assert helper is not None
            helper.join(30)
            result = run.result()
    finally:
        for srv in servers:
            srv.stop()
    assert answered == ["Deleted: gone"]
    assert result.reason == "complete" and result.text == "Deleted: gone"
    assert [e for e in events if isinstance(e, RunEnd)] == [events[-1]]
    assert not result.synthesized
    assert any(isinstance(e, RunResume) for e in events)
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    assert all(e.run_id in (None, run.run_id) for e in events)


def test_a_suspended_snapshot_says_what_its_run_waits_for_and_is_taken_up_waiting() -> None:
    """The hand-written golden case: suspended for the tool's result after its approval."""
    path = Path(__file__).parents[1] / "fixtures" / "folds-by-hand" / "suspended.json"
    fixture = json.loads(path.read_text())
    snap = SessionSnapshot.from_json({"id": "ses_1", "offset": "0_14", **fixture["snapshot"]})
    assert snap.active_run is not None and snap.active_run.suspended is not None
    part = snap.messages[-1].parts[0]
    assert snap.waiting_calls() == [
        ToolCall(
            id="call_run_1_1", name="delete_file", arguments={"path": "/tmp/report.txt"},
            needs_approval=False, part_id=part.id,
        )
    ]  # fmt: skip
    clock = Clock()
    f = RunFollower("run_1", None, snap.offset, idle_timeout=1.0, clock=clock)
    f.attach(snap)
    assert f.started and f.deadline() is None
    clock.now += 3600
    f.check()
    assert [c.id for c in f.take_tool_calls()] == ["call_run_1_1"]
    assert f.state.result().parts[0].approval == {"approved": True, "reason": None}
