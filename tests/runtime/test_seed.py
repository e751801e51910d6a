"""Runtime.seed places a conversation's earlier turns; Runtime.answer continues it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from tether.runtime.context import RunContext
from tether.runtime.runner import Conflict, InvalidInput, Runtime
from tether.sessions import events as ev
from tether.sessions.fold import Message
from tether.sessions.service import SessionService, stream_name
from tether.store.memory import MemoryStore

histories: list[list[Message]] = []
#: Set when an agent starts (made afresh for each test's event loop).
started: dict[str, asyncio.Event] = {}


async def recorder(ctx: RunContext) -> None:
    histories.append(list(ctx.history))
    started["run"].set()
    if ctx.history[-1].text == "slow":
        await asyncio.sleep(10)
    await ctx.text("done")


@pytest.fixture
async def env() -> AsyncIterator[tuple[SessionService, Runtime, str]]:
    histories.clear()
    started["run"] = asyncio.Event()
    store = MemoryStore()
    await store.open()
    sessions = SessionService(store)
    runtime = Runtime(sessions, lambda record: recorder)
    await runtime.start()
    sid = (await sessions.create(owner=None, model=None, agent="x", system=None, title=None)).id
    yield sessions, runtime, sid
    await runtime.aclose()
    await store.aclose()


async def stream_events(sessions: SessionService, sid: str) -> list[ev.Event]:
    res = await sessions.store.read(stream_name(sid), 0, 1 << 30)
    return [orjson.loads(c) for c in res.chunks]


async def wait_idle(sessions: SessionService, sid: str) -> None:
    for _ in range(500):
        if (await sessions.state(sid)).fold.active_run is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the run did not end")


TURNS = [
    {"role": "user", "text": "find x"},
    {
        "role": "assistant",
        "text": "Looking.",
        "tool_calls": [
            {"id": "c1", "name": "lookup", "arguments": '{"q": "x"}', "result": "42"},
            {"id": "c2", "name": "lookup", "arguments": "not json", "error": "boom"},
        ],
    },
]


async def test_seed_places_turns_and_runs_nothing(env) -> None:
    sessions, runtime, sid = env
    leaf = await runtime.seed(sid, TURNS)
    evs = await stream_events(sessions, sid)
    assert not [e for e in evs if e["type"] in (ev.RUN_START, ev.RUN_END, ev.STATUS)]
    fold = (await sessions.state(sid)).fold
    user, answer = fold.branch()
    assert fold.leaf == leaf == answer.id and answer.parent_id == user.id
    assert (user.role, user.text) == ("user", "find x")
    assert (answer.role, answer.text, answer.status) == ("assistant", "Looking.", "complete")
    c1, c2 = fold.tool_call("c1"), fold.tool_call("c2")
    assert c1 is not None and (c1.tool_name, c1.value, c1.result) == ("lookup", {"q": "x"}, "42")
    assert c2 is not None and (c2.value, c2.error) == ("not json", "boom")
    assert await runtime.seed(sid, []) == leaf


async def test_answer_continues_after_the_seeded_turns(env) -> None:
    sessions, runtime, sid = env
    leaf = await runtime.seed(sid, TURNS)
    assert leaf is not None
    run_id, queued = await runtime.answer(sid, leaf)
    assert not queued
    await wait_idle(sessions, sid)
    (history,) = histories
    assert [m.id for m in history] == [m.id for m in (await sessions.state(sid)).fold.branch(leaf)]
    fold = (await sessions.state(sid)).fold
    reply = fold.branch()[-1]
    assert (reply.parent_id, reply.run_id, reply.text) == (leaf, run_id, "done")
    assert not [e for e in await stream_events(sessions, sid) if e["type"] == ev.USER_MESSAGE][1:]
    with pytest.raises(InvalidInput):
        await runtime.answer(sid, "msg_nope")


async def test_seed_refuses_a_busy_session(env) -> None:
    sessions, runtime, sid = env
    await runtime.send(sid, [{"type": "text", "text": "slow"}])
    await asyncio.wait_for(started["run"].wait(), 5)  # the run has started
    with pytest.raises(Conflict):
        await runtime.seed(sid, TURNS)
    await runtime.cancel(sid)
    await wait_idle(sessions, sid)
    with pytest.raises(InvalidInput):
        await runtime.seed(sid, [{"role": "tool", "text": "x"}])
