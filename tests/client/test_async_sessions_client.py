"""The asynchronous session SDK (``AsyncTether``) against a real server over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from client.conftest import KEY, Server
from client.proxy import TcpProxy
from tether.client import (
    AsyncTether,
    BadRequest,
    FirstEventTimeout,
    IdleTimeout,
    NotFound,
    PartDelta,
    PartStart,
    RunEnd,
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


async def test_send_stream_text(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="count", title="async")
    assert s.title == "async"
    run = await aclient.send(s.id, "/count 7 5")
    events = [ev async for ev in run.stream()]
    assert isinstance(events[0], UserMessage) and events[0].message_id == run.message_id
    assert isinstance(events[-1], RunEnd) and events[-1].reason == "complete"
    assert "".join(e.delta for e in events if isinstance(e, PartDelta)) == numbers(7)
    assert await run.text() == numbers(7)
    snap = await aclient.sessions.get(s.id)
    assert snap.messages[-1].text == numbers(7) and snap.active_run is None
    assert (await aclient.send(s.id, "/count 2")).message_id != run.message_id


async def test_demo_model_count(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(model="demo")
    assert await (await aclient.send(s.id, "/count 4 5")).text() == numbers(4)


async def test_stream_survives_cut_connections(server: Server, proxy: TcpProxy) -> None:
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


async def test_first_event_and_idle_timeouts(aclient: AsyncTether) -> None:
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


async def test_deleting_a_session_ends_its_queued_runs_as_cancelled(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="silent")
    await aclient.send(s.id, "hold")
    queued = await aclient.send(s.id, "never runs")

    async def delete_soon() -> None:
        await asyncio.sleep(0.3)
        await aclient.sessions.delete(s.id)

    task = asyncio.create_task(delete_soon())
    events = [ev async for ev in queued.stream()]
    await task
    assert isinstance(events[-1], RunEnd) and not events[-1].synthesized
    assert events[-1].reason == "cancelled"


async def test_synthesized_end_when_the_session_is_gone(aclient: AsyncTether) -> None:
    s = await aclient.sessions.create(agent="silent")
    run = await aclient.send(s.id, "hold")
    await aclient.sessions.delete(s.id)
    events = [ev async for ev in run.stream()]
    assert isinstance(events[-1], RunEnd) and events[-1].synthesized
    assert events[-1].reason == "interrupted"


async def test_async_tool_handlers(aclient: AsyncTether) -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    s = await aclient.sessions.create(agent="tools")
    run = await aclient.send(s.id, "add")
    events = [ev async for ev in run.stream(tools={"add": add})]
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


async def test_typed_errors(aclient: AsyncTether, server: Server) -> None:
    with pytest.raises(NotFound):
        await aclient.sessions.get("ses_nope")
    s = await aclient.sessions.create(agent="count")
    with pytest.raises(BadRequest):
        await aclient.send(s.id, "")
    async with AsyncTether(server.url, api_key="nope") as bad:
        with pytest.raises(Unauthorized) as err:
            await bad.sessions.create()
        assert "nope" not in str(err.value)
    await aclient.sessions.delete(s.id)
    with pytest.raises(NotFound):
        await aclient.sessions.delete(s.id)
