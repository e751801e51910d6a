"""The asynchronous session SDK (``AsyncTether``) against a real server over loopback.

The same specification as ``test_sessions_client.py`` (the sync ``Tether``,
generated from this client), test for test, plus what only the async client
does: tool handlers and approval callbacks that are coroutines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from client.conftest import KEY, Server
from client.proxy import TcpProxy
from helpers.server import ServerFactory
from tether.client import (
    AsyncTether,
    BadRequest,
    Conflict,
    Event,
    FirstEventTimeout,
    IdleTimeout,
    MessageStart,
    NotFound,
    PartDelta,
    PartStart,
    RunEnd,
    RunStart,
    SessionSnapshot,
    TetherConnectionError,
    ToolResult,
    Unauthorized,
    UserMessage,
)


def numbers(n: int) -> str:
    return " ".join(str(i) for i in range(1, n + 1))


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[AsyncTether]:
    async with AsyncTether(server.url, api_key=KEY) as c:
        yield c


def later(delay: float, fn: Callable[..., Awaitable[object]], *args: object) -> asyncio.Task[None]:
    """Await ``fn(*args)`` after ``delay`` seconds, beside the test."""

    async def work() -> None:
        await asyncio.sleep(delay)
        await fn(*args)

    return asyncio.create_task(work())


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [ev async for ev in events]


# -- sessions ----------------------------------------------------------------------------


async def test_session_crud(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count", title="crud", system="be brief")
    assert s.id.startswith("ses_") and s.title == "crud" and s.agent == "count"
    assert s.status == "idle" and s.stream_url == f"/v1/stream/sessions/{s.id}"
    assert s.id in [x.id for x in await aclient.sessions.list()]
    snap = await aclient.sessions.get(s.id)
    assert isinstance(snap, SessionSnapshot)
    assert snap.messages == [] and snap.active_run is None and snap.queue == []
    assert snap.offset == "0000000000000000_0000000000000000"
    assert (await aclient.sessions.update(s.id, title="renamed")).title == "renamed"
    assert (await aclient.sessions.archive(s.id)).archived
    assert s.id not in [x.id for x in await aclient.sessions.list()]
    assert s.id in [x.id for x in await aclient.sessions.list(archived=True)]
    await aclient.sessions.delete(s.id)
    with pytest.raises(NotFound):
        await aclient.sessions.get(s.id)


# -- send, stream, text ----------------------------------------------------------------


async def test_send_stream_text(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count", title="async")
    assert s.title == "async"
    run = await aclient.send(s.id, "/count 7 5")
    assert run.run_id.startswith("run_") and run.message_id and not run.queued
    events = await collect(run.stream())
    kinds = [type(e) for e in events]
    assert kinds[0] is UserMessage and events[0].message_id == run.message_id
    assert RunStart in kinds and MessageStart in kinds and PartStart in kinds
    assert isinstance(events[-1], RunEnd) and events[-1].reason == "complete"
    assert not events[-1].synthesized
    assert all(e.run_id in (None, run.run_id) for e in events)
    assert "".join(e.delta for e in events if isinstance(e, PartDelta)) == numbers(7)
    offsets = [e.offset for e in events]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert run.done and await run.text() == numbers(7)  # already ended: no second read
    result = await run.result()
    assert result.ok and result.text == numbers(7) and result.status == "complete"
    assert result.message_id and result.parts[0].kind == "text"
    snap = await aclient.sessions.get(s.id)
    assert [m.role for m in snap.messages] == ["user", "assistant"]
    assert snap.messages[1].text == numbers(7) and snap.messages[1].run_id == run.run_id
    assert snap.active_run is None
    assert (await aclient.send(s.id, "/count 2")).message_id != run.message_id


async def test_text_without_streaming_first(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count")
    assert await (await aclient.send(s.id, "/count 3")).text() == numbers(3)
    run = await aclient.send(s.id, [{"type": "text", "text": "/count 4"}])
    assert await run.text() == numbers(4)


async def test_queued_runs_each_see_only_their_own_events(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count")
    first = await aclient.send(s.id, "/count 10 20")
    second = await aclient.send(s.id, "/count 3 0")
    assert second.queued
    assert await second.text() == numbers(3)
    assert await first.text() == numbers(10)


async def test_edit_and_regenerate(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count")
    run = await aclient.send(s.id, "/count 2")
    assert await run.text() == numbers(2)
    again = await aclient.regenerate(s.id, run.message_id or "")
    assert again.message_id is None and await again.text() == numbers(2)
    edited = await aclient.edit(s.id, run.message_id or "", "/count 3")
    assert edited.message_id != run.message_id and await edited.text() == numbers(3)
    snap = await aclient.sessions.get(s.id)
    assert snap.messages[0].edit_of == run.message_id
    assert snap.messages[0].siblings == [run.message_id, edited.message_id]
    assert snap.messages[-1].text == numbers(3)


async def test_failed_run_result(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="broken")
    result = await (await aclient.send(s.id, "go")).result()
    assert result.reason == "error" and not result.ok
    assert result.error == {"code": "RuntimeError", "message": "the agent fell over"}
    assert result.text == "about to fail"


async def test_cancel_active_run(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="stall")
    run = await aclient.send(s.id, "go")
    async for ev in run.stream():
        if isinstance(ev, PartDelta):
            assert await run.cancel()
    assert (await run.result()).reason == "cancelled"


async def test_demo_model_count(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(model="demo")
    assert await (await aclient.send(s.id, "/count 4 5")).text() == numbers(4)
    snap = await aclient.sessions.get(s.id)
    assert snap.usage == snap.messages[-1].usage and snap.usage["output_tokens"] > 0


# -- resume -------------------------------------------------------------------------------


@pytest.mark.parametrize("truncate", [False, True])
async def test_stream_survives_cut_connections(
    server: Server, proxy: TcpProxy, truncate: bool
) -> None:
    """Cut the connection every few deltas (sometimes mid-event): every event exactly once."""
    n = 40
    async with AsyncTether(proxy.url, api_key=KEY) as c:
        s = await c.sessions.create(agent="count")
        run = await c.send(s.id, f"/count {n} 15")
        deltas: list[str] = []
        ids: list[str | None] = []
        async for ev in run.stream():
            ids.append(ev.id)
            if isinstance(ev, PartDelta):
                deltas.append(ev.delta)
                if len(deltas) % 4 == 0:
                    proxy.truncate_next = truncate
                    proxy.cut()
        assert "".join(deltas) == numbers(n)
        assert len(ids) == len(set(ids))
        assert proxy.cuts >= 8
        assert await run.text() == numbers(n)


async def test_stream_survives_cuts_alternately_mid_event(server: Server, proxy: TcpProxy) -> None:
    """Cuts every third delta, every other one mid-event: every event exactly once."""
    n = 36
    async with AsyncTether(proxy.url, api_key=KEY) as c:
        s = await c.sessions.create(agent="count")
        run = await c.send(s.id, f"/count {n} 15")
        deltas: list[str] = []
        ids: list[str | None] = []
        async for ev in run.stream():
            ids.append(ev.id)
            if isinstance(ev, PartDelta):
                deltas.append(ev.delta)
                if len(deltas) % 3 == 0:
                    proxy.truncate_next = len(deltas) % 2 == 0
                    proxy.cut()
        assert "".join(deltas) == numbers(n)
        assert len(ids) == len(set(ids)) and proxy.cuts >= 8


async def test_stream_resumes_from_caller_offset(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count")
    run = await aclient.send(s.id, "/count 6 0")
    events = await collect(run.stream())
    middle = next(i for i, e in enumerate(events) if isinstance(e, PartDelta))
    # A new handle on the same run, from the offset of an event in the middle.
    again = aclient.run(s.id, run.run_id, message_id=run.message_id)
    tail = await collect(again.stream(offset=events[middle].offset))
    assert [e.id for e in tail] == [e.id for e in events[middle + 1 :]]


async def test_session_events_follow_everything(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count")
    run = await aclient.send(s.id, "/count 2")
    await run.result()
    seen = []
    async for ev in aclient.events(s.id):
        seen.append(ev)
        if isinstance(ev, RunEnd):
            break
    assert [e.type for e in seen][-1] == "run-end" and seen[0].type == "user-message"
    # It ends by itself once the session is gone.
    deleter = later(0.2, aclient.sessions.delete, s.id)
    rest = [e.type for e in await collect(aclient.events(s.id, offset=seen[-1].offset))]
    assert set(rest) <= {"status", "cancel"}  # what followed the run-end, then the end
    await deleter
    with pytest.raises(NotFound):
        await collect(aclient.events(s.id))


# -- timeouts and endings ----------------------------------------------------------------


async def test_first_event_timeout(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="silent")
    blocker = await aclient.send(s.id, "hold the session")
    queued = await aclient.send(s.id, "waits forever")
    assert queued.queued
    started = time.monotonic()
    with pytest.raises(FirstEventTimeout) as err:
        await collect(queued.stream(first_event_timeout=0.5))
    assert 0.4 < time.monotonic() - started < 3
    assert err.value.run_id == queued.run_id and err.value.timeout == 0.5
    await blocker.cancel()


async def test_first_event_timeout_for_a_run_that_never_comes(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count")
    ghost = aclient.run(s.id, "run_does_not_exist")
    with pytest.raises(FirstEventTimeout):
        await ghost.text(first_event_timeout=0.3)


async def test_idle_timeout(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="stall")
    run = await aclient.send(s.id, "go")
    seen = []
    with pytest.raises(IdleTimeout):
        async for ev in run.stream(idle_timeout=0.5):
            seen.append(ev)
    assert any(isinstance(e, PartDelta) and e.delta == "hello" for e in seen)
    # The handle carries on where it stopped; the run can still be ended.
    assert await run.cancel()
    assert (await run.result()).reason == "cancelled"


async def test_first_event_and_idle_timeouts_of_a_run_and_the_one_queued_behind(
    aclient: AsyncTether,
) -> None:
    s = await aclient.sessions.create(agent="stall")
    run = await aclient.send(s.id, "go")
    queued = await aclient.send(s.id, "behind a stalled run")
    with pytest.raises(FirstEventTimeout):
        await queued.text(first_event_timeout=0.4)
    with pytest.raises(IdleTimeout):
        async for _ in run.stream(idle_timeout=0.4):
            pass
    assert await run.cancel()
    assert (await run.result()).reason == "cancelled"
    # Queued still, or started once the first ended: either way it ends "cancelled".
    assert await queued.cancel()
    assert (await queued.result()).reason == "cancelled"


async def test_idle_timeout_is_suspended_while_waiting_for_a_tool(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="tools")
    run = await aclient.send(s.id, "add")
    answer = None
    async for ev in run.stream(idle_timeout=0.3):
        if isinstance(ev, PartStart) and ev.tool_call_id:
            answer = later(1.0, run.tool_result, ev.tool_call_id, 5)  # > the idle timeout
    assert answer is not None
    await answer
    assert await run.text() == "sum=5"


async def test_deleting_a_session_ends_its_queued_runs_as_cancelled(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="silent")
    await aclient.send(s.id, "hold")
    queued = await aclient.send(s.id, "never runs")
    deleter = later(0.3, aclient.sessions.delete, s.id)
    events = await collect(queued.stream())
    await deleter
    end = events[-1]
    assert isinstance(end, RunEnd) and not end.synthesized and end.reason == "cancelled"


async def test_synthesized_end_when_the_session_is_gone(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="silent")
    run = await aclient.send(s.id, "hold")
    await aclient.sessions.delete(s.id)
    events = await collect(run.stream())
    assert isinstance(events[-1], RunEnd) and events[-1].synthesized
    assert events[-1].reason == "interrupted"
    result = await run.result()
    assert result.reason == "interrupted" and result.synthesized


async def test_deleting_the_session_mid_run_ends_the_stream(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="stall")
    run = await aclient.send(s.id, "go")
    deleter = None
    async for ev in run.stream():
        if isinstance(ev, PartDelta) and deleter is None:
            deleter = later(0.1, aclient.sessions.delete, s.id)
    assert deleter is not None
    await deleter
    assert run.done and (await run.result()).reason in ("cancelled", "interrupted")


async def test_cancelled_queued_run_ends_with_its_run_end(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="silent")
    blocker = await aclient.send(s.id, "hold")
    queued = await aclient.send(s.id, "cancel me before I run")
    canceller = later(0.3, queued.cancel)
    events = await collect(queued.stream(first_event_timeout=10))
    await canceller
    end = events[-1]
    assert isinstance(end, RunEnd) and end.reason == "cancelled"
    assert [e for e in events if isinstance(e, RunEnd)] == [end]
    await blocker.cancel()


# -- tools --------------------------------------------------------------------------------


async def test_tool_handlers_answer_calls(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="tools")
    run = await aclient.send(s.id, "add")
    events = await collect(run.stream(tools={"add": lambda a, b: a + b}))
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(results) == 1 and results[0].output == 5
    result = await run.result()
    assert result.text == "sum=5"
    call = next(p for p in result.parts if p.kind == "tool-call")
    assert call.tool_name == "add" and call.value == {"a": 2, "b": 3} and call.result == 5


async def test_tool_handler_errors_go_back_to_the_agent(aclient: AsyncTether) -> None:
    def add(a: int, b: int) -> int:
        raise ValueError("no adding today")

    s = await aclient.sessions.create(agent="tools")
    assert await (await aclient.send(s.id, "add")).text(tools={"add": add}) == (
        "error=ValueError: no adding today"
    )


async def test_tool_approvals(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="approval")
    handlers = {"remove": lambda path: f"ok:{path}"}
    approved = await aclient.send(s.id, "rm")
    assert await approved.text(tools=handlers, approve=True) == "removed=ok:/tmp/x"
    refused = await aclient.send(s.id, "rm")
    text = await refused.text(tools=handlers, approve=lambda call: (False, "nope"))
    assert text == "refused=not approved: nope"


async def test_tool_approved_by_someone_else_then_run_here(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="approval")
    run = await aclient.send(s.id, "rm")
    approvals = []
    async for ev in run.stream(tools={"remove": lambda path: "done"}):
        if isinstance(ev, PartStart) and ev.tool_call_id:
            approvals.append(later(0.1, aclient.tool_approval, s.id, ev.tool_call_id, True))
    await asyncio.gather(*approvals)
    assert await run.text() == "removed=done"


async def test_async_tool_handlers(aclient: AsyncTether) -> None:
    """Handlers and approval callbacks may be coroutines: the client awaits them."""

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    s = await aclient.sessions.create(agent="tools")
    run = await aclient.send(s.id, "add")
    events = await collect(run.stream(tools={"add": add}))
    assert [e.output for e in events if isinstance(e, ToolResult)] == [5]
    assert (await run.result()).text == "sum=5"

    a = await aclient.sessions.create(agent="approval")

    async def verdict(call: object) -> tuple[bool, str]:
        return False, "not today"

    refused = await aclient.send(a.id, "rm")
    assert await refused.text(tools={"remove": add}, approve=verdict) == (
        "refused=not approved: not today"
    )
    manual = await aclient.send(a.id, "rm")
    async for ev in manual.stream():
        if isinstance(ev, PartStart) and ev.tool_call_id:
            await manual.tool_approval(ev.tool_call_id, True)
            await manual.tool_result(ev.tool_call_id, output="by hand")
    assert (await manual.result()).text == "removed=by hand"


# -- errors -------------------------------------------------------------------------------


async def test_typed_errors(aclient: AsyncTether, server: Server) -> None:
    with pytest.raises(NotFound) as nf:
        await aclient.sessions.get("ses_nope")
    assert nf.value.status == 404 and nf.value.code == "not_found"
    assert "ses_nope" in nf.value.message
    with pytest.raises(NotFound) as nf:
        await aclient.send("ses_nope", "hi")
    assert nf.value.code == "not_found"
    with pytest.raises(NotFound):
        await anext(aiter(aclient.events("ses_nope")))

    s = await aclient.sessions.create(agent="count")
    with pytest.raises(BadRequest) as bad:
        await aclient.send(s.id, "   ")
    assert bad.value.status == 400 and bad.value.code == "invalid_input"
    with pytest.raises(BadRequest):
        await aclient.send(s.id, "")
    with pytest.raises(BadRequest) as unknown:
        await aclient.sessions.create(model="no-such-model")
    assert unknown.value.status == 400
    with pytest.raises(BadRequest) as invalid:
        await aclient.send(s.id, [])
    assert invalid.value.status == 422 and invalid.value.code == "validation_error"
    with pytest.raises(BadRequest):
        await aclient.regenerate(s.id, "msg_nope")

    t = await aclient.sessions.create(agent="tools")
    run = await aclient.send(t.id, "add")
    await run.text(tools={"add": lambda a, b: a + b})
    call_id = next(p.tool_call_id for p in (await run.result()).parts if p.tool_call_id)
    with pytest.raises(Conflict) as conflict:
        await aclient.tool_result(t.id, call_id or "", output=1)
    assert conflict.value.status == 409

    for key in ("wrong-key", ""):
        async with AsyncTether(server.url, api_key=key) as other:
            with pytest.raises(Unauthorized) as unauth:
                await other.sessions.list()
        assert unauth.value.status == 401 and unauth.value.code == "unauthorized"
    async with AsyncTether(server.url, api_key="nope") as bad_key:
        with pytest.raises(Unauthorized) as err:
            await bad_key.sessions.create()
        assert "nope" not in str(err.value)

    await aclient.sessions.delete(s.id)
    with pytest.raises(NotFound):
        await aclient.sessions.delete(s.id)


async def test_key_never_appears_in_errors_or_reprs(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_API_KEY", KEY)
    monkeypatch.setenv("TETHER_URL", server.url)
    async with AsyncTether() as c:  # both from the environment
        assert c.base_url == server.url and await c.sessions.list() is not None
        assert KEY not in repr(c) and KEY not in repr(c.streams)
        s = await c.sessions.create(agent="count")
        run = await c.send(s.id, "/count 1")
        assert KEY not in repr(run)
        with pytest.raises(NotFound) as err:
            await c.sessions.get("ses_nope")
        assert KEY not in str(err.value) and KEY not in repr(err.value)
        assert KEY not in repr(await c.read_token(s.id))
    bad_key = KEY[::-1]
    async with AsyncTether(server.url, api_key=bad_key) as c:
        with pytest.raises(Unauthorized) as err:
            await c.sessions.list()
    assert bad_key not in str(err.value) and bad_key not in repr(err.value)
    async with AsyncTether("http://127.0.0.1:9", api_key=KEY, timeout=1) as c:
        with pytest.raises(TetherConnectionError) as conn:
            await c.sessions.list()
        assert KEY not in str(conn.value) and KEY not in repr(conn.value)


async def test_against_tether_serve(tether_server: ServerFactory) -> None:
    """The same client against the real ``tether serve`` process and the demo model."""
    srv = await asyncio.to_thread(tether_server, store="memory")
    async with AsyncTether(srv.base_url) as c:
        s = await c.sessions.create(model="demo")
        run = await c.send(s.id, "/count 5 10")
        assert await run.text() == numbers(5)
        assert (await c.sessions.get(s.id)).messages[-1].text == numbers(5)


async def test_stream_survives_a_server_crash_and_restart(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    """kill -9 mid-run, restart on the same port and log: the stream reconnects by itself,
    sees nothing twice, and follows the same run, continued by the restarted server, to
    its end."""
    first = await asyncio.to_thread(tether_server, tmp_path / "data")
    async with AsyncTether(first.base_url, reconnect_timeout=30) as c:
        s = await c.sessions.create(model="demo")
        run = await c.send(s.id, "/count 400 10")
        ids: list[str | None] = []
        deltas: list[str] = []
        async for ev in run.stream():
            ids.append(ev.id)
            if isinstance(ev, PartDelta):
                deltas.append(ev.delta)
                if len(deltas) == 5:
                    first.kill()
                    await asyncio.to_thread(tether_server, tmp_path / "data", port=first.port)
        assert len(ids) == len(set(ids))
        # The restarted server goes on with the same run: the cut attempt is discarded.
        result = await run.result()
        assert result.reason == "complete" and not result.synthesized
        assert result.text == " ".join(str(i) for i in range(1, 401))
        assert len(deltas) > 400
