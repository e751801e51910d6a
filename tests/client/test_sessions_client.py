"""The session SDK (``Tether``) against a real server over loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.conftest import KEY, Server
from client.proxy import TcpProxy
from helpers.server import ServerFactory
from tether.client import (
    BadRequest,
    Conflict,
    FirstEventTimeout,
    IdleTimeout,
    MessageStart,
    NotFound,
    PartDelta,
    PartStart,
    RunEnd,
    RunStart,
    SessionSnapshot,
    Tether,
    TetherConnectionError,
    ToolResult,
    Unauthorized,
    UserMessage,
)


def numbers(n: int) -> str:
    return " ".join(str(i) for i in range(1, n + 1))


@pytest.fixture
def client(server: Server) -> Iterator[Tether]:
    with Tether(server.url, api_key=KEY) as c:
        yield c


def later(delay: float, fn: object, *args: object) -> threading.Thread:
    def work() -> None:
        time.sleep(delay)
        fn(*args)  # type: ignore[operator]

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# -- sessions ----------------------------------------------------------------------------


def test_session_crud(client: Tether) -> None:
    s = client.sessions.create(agent="count", title="crud", system="be brief")
    assert s.id.startswith("ses_") and s.title == "crud" and s.agent == "count"
    assert s.status == "idle" and s.stream_url == f"/v1/stream/sessions/{s.id}"
    assert s.id in [x.id for x in client.sessions.list()]
    snap = client.sessions.get(s.id)
    assert isinstance(snap, SessionSnapshot)
    assert snap.messages == [] and snap.active_run is None and snap.queue == []
    assert snap.offset == "0000000000000000_0000000000000000"
    assert client.sessions.update(s.id, title="renamed").title == "renamed"
    assert client.sessions.archive(s.id).archived
    assert s.id not in [x.id for x in client.sessions.list()]
    assert s.id in [x.id for x in client.sessions.list(archived=True)]
    client.sessions.delete(s.id)
    with pytest.raises(NotFound):
        client.sessions.get(s.id)


# -- send, stream, text ----------------------------------------------------------------


def test_send_stream_text(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    run = client.send(s.id, "/count 5 5")
    assert run.run_id.startswith("run_") and run.message_id and not run.queued
    events = list(run.stream())
    kinds = [type(e) for e in events]
    assert kinds[0] is UserMessage and events[0].message_id == run.message_id
    assert RunStart in kinds and MessageStart in kinds and PartStart in kinds
    assert isinstance(events[-1], RunEnd) and events[-1].reason == "complete"
    assert not events[-1].synthesized
    assert all(e.run_id in (None, run.run_id) for e in events)
    assert "".join(e.delta for e in events if isinstance(e, PartDelta)) == numbers(5)
    offsets = [e.offset for e in events]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert run.done and run.text() == numbers(5)  # already ended: no second read
    result = run.result()
    assert result.ok and result.text == numbers(5) and result.status == "complete"
    assert result.message_id and result.parts[0].kind == "text"
    snap = client.sessions.get(s.id)
    assert [m.role for m in snap.messages] == ["user", "assistant"]
    assert snap.messages[1].text == numbers(5) and snap.messages[1].run_id == run.run_id


def test_text_without_streaming_first(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    assert client.send(s.id, "/count 3").text() == numbers(3)
    assert client.send(s.id, [{"type": "text", "text": "/count 4"}]).text() == numbers(4)


def test_queued_runs_each_see_only_their_own_events(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    first = client.send(s.id, "/count 10 20")
    second = client.send(s.id, "/count 3 0")
    assert second.queued
    assert second.text() == numbers(3)
    assert first.text() == numbers(10)


def test_edit_and_regenerate(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    run = client.send(s.id, "/count 2")
    assert run.text() == numbers(2)
    again = client.regenerate(s.id, run.message_id or "")
    assert again.message_id is None and again.text() == numbers(2)
    edited = client.edit(s.id, run.message_id or "", "/count 3")
    assert edited.message_id != run.message_id and edited.text() == numbers(3)
    snap = client.sessions.get(s.id)
    assert snap.messages[0].edit_of == run.message_id
    assert snap.messages[0].siblings == [run.message_id, edited.message_id]
    assert snap.messages[-1].text == numbers(3)


def test_failed_run_result(client: Tether) -> None:
    s = client.sessions.create(agent="broken")
    result = client.send(s.id, "go").result()
    assert result.reason == "error" and not result.ok
    assert result.error == {"code": "RuntimeError", "message": "the agent fell over"}
    assert result.text == "about to fail"


def test_cancel_active_run(client: Tether) -> None:
    s = client.sessions.create(agent="stall")
    run = client.send(s.id, "go")
    for ev in run.stream():
        if isinstance(ev, PartDelta):
            assert run.cancel()
    assert run.result().reason == "cancelled"


def test_demo_model_count(client: Tether) -> None:
    s = client.sessions.create(model="demo")
    assert client.send(s.id, "/count 6 5").text() == numbers(6)
    snap = client.sessions.get(s.id)
    assert snap.usage == snap.messages[-1].usage and snap.usage["output_tokens"] > 0


# -- resume -------------------------------------------------------------------------------


@pytest.mark.parametrize("truncate", [False, True])
def test_stream_survives_cut_connections(server: Server, proxy: TcpProxy, truncate: bool) -> None:
    """Cut the connection every few deltas (sometimes mid-event): every event exactly once."""
    n = 40
    with Tether(proxy.url, api_key=KEY) as c:
        s = c.sessions.create(agent="count")
        run = c.send(s.id, f"/count {n} 15")
        deltas: list[str] = []
        ids: list[str | None] = []
        for ev in run.stream():
            ids.append(ev.id)
            if isinstance(ev, PartDelta):
                deltas.append(ev.delta)
                if len(deltas) % 4 == 0:
                    proxy.truncate_next = truncate
                    proxy.cut()
        assert "".join(deltas) == numbers(n)
        assert len(ids) == len(set(ids))
        assert proxy.cuts >= 8
        assert run.text() == numbers(n)


def test_stream_resumes_from_caller_offset(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    run = client.send(s.id, "/count 6 0")
    events = list(run.stream())
    middle = next(i for i, e in enumerate(events) if isinstance(e, PartDelta))
    # A new handle on the same run, from the offset of an event in the middle.
    again = client.run(s.id, run.run_id, message_id=run.message_id)
    tail = list(again.stream(offset=events[middle].offset))
    assert [e.id for e in tail] == [e.id for e in events[middle + 1 :]]


def test_session_events_follow_everything(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    run = client.send(s.id, "/count 2")
    run.result()
    seen = []
    for ev in client.events(s.id):
        seen.append(ev)
        if isinstance(ev, RunEnd):
            break
    assert [e.type for e in seen][-1] == "run-end" and seen[0].type == "user-message"
    # It ends by itself once the session is gone.
    deleter = later(0.2, client.sessions.delete, s.id)
    rest = [e.type for e in client.events(s.id, offset=seen[-1].offset)]
    assert set(rest) <= {"status", "cancel"}  # what followed the run-end, then the end
    deleter.join()
    with pytest.raises(NotFound):
        list(client.events(s.id))


# -- timeouts and endings ----------------------------------------------------------------


def test_first_event_timeout(client: Tether) -> None:
    s = client.sessions.create(agent="silent")
    blocker = client.send(s.id, "hold the session")
    queued = client.send(s.id, "waits forever")
    assert queued.queued
    started = time.monotonic()
    with pytest.raises(FirstEventTimeout) as err:
        list(queued.stream(first_event_timeout=0.5))
    assert 0.4 < time.monotonic() - started < 3
    assert err.value.run_id == queued.run_id and err.value.timeout == 0.5
    blocker.cancel()


def test_first_event_timeout_for_a_run_that_never_comes(client: Tether) -> None:
    s = client.sessions.create(agent="count")
    ghost = client.run(s.id, "run_does_not_exist")
    with pytest.raises(FirstEventTimeout):
        ghost.text(first_event_timeout=0.3)


def test_idle_timeout(client: Tether) -> None:
    s = client.sessions.create(agent="stall")
    run = client.send(s.id, "go")
    seen = []
    with pytest.raises(IdleTimeout):
        for ev in run.stream(idle_timeout=0.5):
            seen.append(ev)
    assert any(isinstance(e, PartDelta) and e.delta == "hello" for e in seen)
    # The handle carries on where it stopped; the run can still be ended.
    assert run.cancel()
    assert run.result().reason == "cancelled"


def test_idle_timeout_is_suspended_while_waiting_for_a_tool(client: Tether) -> None:
    s = client.sessions.create(agent="tools")
    run = client.send(s.id, "add")
    answer = None
    for ev in run.stream(idle_timeout=0.3):
        if isinstance(ev, PartStart) and ev.tool_call_id:
            answer = later(1.0, run.tool_result, ev.tool_call_id, 5)  # > the idle timeout
    assert answer is not None
    assert run.text() == "sum=5"


def test_deleting_a_session_ends_its_queued_runs_as_cancelled(client: Tether) -> None:
    s = client.sessions.create(agent="silent")
    client.send(s.id, "hold")
    queued = client.send(s.id, "never runs")
    deleter = later(0.3, client.sessions.delete, s.id)
    events = list(queued.stream())
    deleter.join()
    end = events[-1]
    assert isinstance(end, RunEnd) and not end.synthesized and end.reason == "cancelled"


def test_synthesized_end_when_the_session_is_gone(client: Tether) -> None:
    s = client.sessions.create(agent="silent")
    run = client.send(s.id, "hold")
    client.sessions.delete(s.id)
    result = run.result()
    assert result.reason == "interrupted" and result.synthesized


def test_deleting_the_session_mid_run_ends_the_stream(client: Tether) -> None:
    s = client.sessions.create(agent="stall")
    run = client.send(s.id, "go")
    deleter = None
    for ev in run.stream():
        if isinstance(ev, PartDelta) and deleter is None:
            deleter = later(0.1, client.sessions.delete, s.id)
    assert deleter is not None
    deleter.join()
    assert run.done and run.result().reason in ("cancelled", "interrupted")


def test_cancelled_queued_run_ends_with_its_run_end(client: Tether) -> None:
    s = client.sessions.create(agent="silent")
    blocker = client.send(s.id, "hold")
    queued = client.send(s.id, "cancel me before I run")
    later(0.3, queued.cancel)
    events = list(queued.stream(first_event_timeout=10))
    end = events[-1]
    assert isinstance(end, RunEnd) and end.reason == "cancelled"
    assert [e for e in events if isinstance(e, RunEnd)] == [end]
    blocker.cancel()


# -- tools --------------------------------------------------------------------------------


def test_tool_handlers_answer_calls(client: Tether) -> None:
    s = client.sessions.create(agent="tools")
    run = client.send(s.id, "add")
    events = list(run.stream(tools={"add": lambda a, b: a + b}))
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(results) == 1 and results[0].output == 5
    result = run.result()
    assert result.text == "sum=5"
    call = next(p for p in result.parts if p.kind == "tool-call")
    assert call.tool_name == "add" and call.value == {"a": 2, "b": 3} and call.result == 5


def test_tool_handler_errors_go_back_to_the_agent(client: Tether) -> None:
    def add(a: int, b: int) -> int:
        raise ValueError("no adding today")

    s = client.sessions.create(agent="tools")
    assert client.send(s.id, "add").text(tools={"add": add}) == (
        "error=ValueError: no adding today"
    )


def test_tool_approvals(client: Tether) -> None:
    s = client.sessions.create(agent="approval")
    handlers = {"remove": lambda path: f"ok:{path}"}
    assert client.send(s.id, "rm").text(tools=handlers, approve=True) == "removed=ok:/tmp/x"
    refused = client.send(s.id, "rm").text(tools=handlers, approve=lambda call: (False, "nope"))
    assert refused == "refused=not approved: nope"


def test_tool_approved_by_someone_else_then_run_here(client: Tether) -> None:
    s = client.sessions.create(agent="approval")
    run = client.send(s.id, "rm")
    for ev in run.stream(tools={"remove": lambda path: "done"}):
        if isinstance(ev, PartStart) and ev.tool_call_id:
            later(0.1, client.tool_approval, s.id, ev.tool_call_id, True)
    assert run.text() == "removed=done"


# -- errors -------------------------------------------------------------------------------


def test_typed_errors(client: Tether, server: Server) -> None:
    with pytest.raises(NotFound) as nf:
        client.sessions.get("ses_nope")
    assert nf.value.status == 404 and nf.value.code == "not_found"
    assert "ses_nope" in nf.value.message
    with pytest.raises(NotFound) as nf:
        client.send("ses_nope", "hi")
    assert nf.value.code == "not_found"
    with pytest.raises(NotFound):
        next(iter(client.events("ses_nope")))

    s = client.sessions.create(agent="count")
    with pytest.raises(BadRequest) as bad:
        client.send(s.id, "   ")
    assert bad.value.status == 400 and bad.value.code == "invalid_input"
    with pytest.raises(BadRequest) as unknown:
        client.sessions.create(model="no-such-model")
    assert unknown.value.status == 400
    with pytest.raises(BadRequest) as invalid:
        client.send(s.id, [])
    assert invalid.value.status == 422 and invalid.value.code == "validation_error"
    with pytest.raises(BadRequest):
        client.regenerate(s.id, "msg_nope")

    t = client.sessions.create(agent="tools")
    run = client.send(t.id, "add")
    run.text(tools={"add": lambda a, b: a + b})
    call_id = next(p.tool_call_id for p in run.result().parts if p.tool_call_id)
    with pytest.raises(Conflict) as conflict:
        client.tool_result(t.id, call_id or "", output=1)
    assert conflict.value.status == 409

    for key in ("wrong-key", ""):
        with Tether(server.url, api_key=key) as other, pytest.raises(Unauthorized) as unauth:
            other.sessions.list()
        assert unauth.value.status == 401 and unauth.value.code == "unauthorized"


def test_key_never_appears_in_errors_or_reprs(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_API_KEY", KEY)
    monkeypatch.setenv("TETHER_URL", server.url)
    with Tether() as c:  # both from the environment
        assert c.base_url == server.url and c.sessions.list() is not None
        assert KEY not in repr(c) and KEY not in repr(c.streams)
        s = c.sessions.create(agent="count")
        run = c.send(s.id, "/count 1")
        assert KEY not in repr(run)
        with pytest.raises(NotFound) as err:
            c.sessions.get("ses_nope")
        assert KEY not in str(err.value) and KEY not in repr(err.value)
        assert KEY not in repr(c.read_token(s.id))
    bad_key = KEY[::-1]
    with Tether(server.url, api_key=bad_key) as c, pytest.raises(Unauthorized) as err:
        c.sessions.list()
    assert bad_key not in str(err.value) and bad_key not in repr(err.value)
    with Tether("http://127.0.0.1:9", api_key=KEY, timeout=1) as c:
        with pytest.raises(TetherConnectionError) as conn:
            c.sessions.list()
        assert KEY not in str(conn.value) and KEY not in repr(conn.value)


def test_against_tether_serve(tether_server: ServerFactory) -> None:
    """The same client against the real ``tether serve`` process and the demo model."""
    import tether.providers

    if not (Path(tether.providers.__file__).parent / "registry.py").exists():
        pytest.skip("tether.providers.registry has not landed yet")
    srv = tether_server(store="memory")
    with Tether(srv.base_url) as c:
        s = c.sessions.create(model="demo")
        run = c.send(s.id, "/count 5 10")
        assert run.text() == numbers(5)
        assert c.sessions.get(s.id).messages[-1].text == numbers(5)


def test_stream_survives_a_server_crash_and_restart(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    """kill -9 mid-run, restart on the same port and log: the stream reconnects by itself,
    sees nothing twice, and follows the same run, continued by the restarted server, to
    its end."""
    first = tether_server(tmp_path / "data")
    with Tether(first.base_url, reconnect_timeout=30) as c:
        s = c.sessions.create(model="demo")
        run = c.send(s.id, "/count 400 10")
        ids: list[str | None] = []
        deltas: list[str] = []
        for ev in run.stream():
            ids.append(ev.id)
            if isinstance(ev, PartDelta):
                deltas.append(ev.delta)
                if len(deltas) == 5:
                    first.kill()
                    tether_server(tmp_path / "data", port=first.port)
        assert len(ids) == len(set(ids))
        # The restarted server goes on with the same run: the cut attempt is discarded.
        result = run.result()
        assert result.reason == "complete" and not result.synthesized
        assert result.text == " ".join(str(i) for i in range(1, 401))
        assert len(deltas) > 400
