"""Runs: one at a time per session, queued in order, cancellable, one run-end each."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from tether.runtime.context import RunContext
from tether.runtime.runner import RUNS, Agent, Conflict, InvalidInput, RunPolicy, Runtime
from tether.sessions import events as ev
from tether.sessions.service import SessionRecord, SessionService, stream_name
from tether.store.memory import MemoryStore


async def echo(ctx: RunContext) -> None:
    await ctx.text("echo: " + ctx.history[-1].text)


async def slow(ctx: RunContext) -> None:
    for i in range(1000):
        await ctx.text(f"{i} ")
        await asyncio.sleep(0.01)


async def broken(ctx: RunContext) -> None:
    await ctx.text("about to fail")
    raise RuntimeError("the agent fell over")


async def asks_tool(ctx: RunContext) -> None:
    outcome = await ctx.tool_call("lookup", {"q": "x"}, call_id="c1")
    await ctx.text(f"got {outcome.output}")


async def stubborn(ctx: RunContext) -> None:
    """Swallows cancels, as asyncio.wait_for does on Python 3.11 when one lands
    just as the awaited task ends (redis-py awaits each send that way)."""
    for i in range(1000):
        await ctx.text(f"{i} ")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)


AGENTS: dict[str, Agent] = {
    "echo": echo, "slow": slow, "broken": broken, "tool": asks_tool, "stubborn": stubborn,
}  # fmt: skip


@pytest.fixture
async def env() -> AsyncIterator[tuple[SessionService, Runtime]]:
    store = MemoryStore()
    await store.open()
    sessions = SessionService(store)

    def resolve(record: SessionRecord) -> Agent:
        assert record.agent is not None
        return AGENTS[record.agent]

    runtime = Runtime(sessions, resolve)
    await runtime.start()
    yield sessions, runtime
    await runtime.aclose()
    await store.aclose()


async def events(sessions: SessionService, sid: str) -> list[ev.Event]:
    res = await sessions.store.read(stream_name(sid), 0, 1 << 30)
    return [orjson.loads(c) for c in res.chunks]


async def wait_idle(sessions: SessionService, sid: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await sessions.state(sid)
        if state.fold.active_run is None and not state.fold.queue:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("session did not become idle")


def run_ends(evs: list[ev.Event]) -> list[tuple[str, str]]:
    return [(e["run_id"], e["reason"]) for e in evs if e["type"] == ev.RUN_END]


async def new_session(sessions: SessionService, agent: str) -> str:
    record = await sessions.create(owner=None, model=None, agent=agent, system=None, title=None)
    return record.id


async def test_a_message_runs_and_ends_with_exactly_one_run_end(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "echo")
    message_id, run_id, queued = await runtime.send(sid, [{"type": "text", "text": "hi"}])
    assert not queued
    await wait_idle(sessions, sid)
    assert run_ends(await events(sessions, sid)) == [(run_id, ev.COMPLETE)]
    snap = (await sessions.state(sid)).fold.snapshot()
    assert [m["role"] for m in snap["messages"]] == ["user", "assistant"]
    assert snap["messages"][0]["id"] == message_id
    assert snap["messages"][1]["parts"][0]["text"] == "echo: hi"


async def test_messages_sent_while_busy_are_queued_and_run_in_order(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "echo")
    runs = [await runtime.send(sid, [{"type": "text", "text": str(i)}]) for i in range(4)]
    assert [q for _, _, q in runs] == [False, True, True, True]
    await wait_idle(sessions, sid)
    assert run_ends(await events(sessions, sid)) == [(r, ev.COMPLETE) for _, r, _ in runs]
    texts = [m.text for m in (await sessions.state(sid)).fold.branch()]
    assert texts == ["0", "echo: 0", "1", "echo: 1", "2", "echo: 2", "3", "echo: 3"]


async def test_cancel_stops_the_run_within_200_ms(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "slow")
    _, run_id, _ = await runtime.send(sid, [{"type": "text", "text": "go"}])
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert await runtime.cancel(sid) == [run_id]
    assert time.monotonic() - started < 0.2
    await wait_idle(sessions, sid)
    assert run_ends(await events(sessions, sid)) == [(run_id, ev.CANCELLED)]


async def test_a_run_that_swallows_its_cancel_stops_at_its_next_append(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "stubborn")
    _, run_id, _ = await runtime.send(sid, [{"type": "text", "text": "go"}])
    await asyncio.sleep(0.1)
    assert await runtime.cancel(sid) == [run_id]
    streamed = len(await events(sessions, sid))
    await wait_idle(sessions, sid, timeout=1)
    evs = await events(sessions, sid)
    assert run_ends(evs) == [(run_id, ev.CANCELLED)]
    # Nothing more was streamed after the cancel returned: only the run's end.
    assert [e["type"] for e in evs[streamed:] if e["type"] == ev.PART_DELTA] == []


async def test_an_agent_exception_ends_the_run_as_error_with_an_error_event(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "broken")
    _, run_id, _ = await runtime.send(sid, [{"type": "text", "text": "go"}])
    await wait_idle(sessions, sid)
    evs = await events(sessions, sid)
    assert run_ends(evs) == [(run_id, ev.FAILED)]
    assert [e["message"] for e in evs if e["type"] == ev.ERROR] == ["the agent fell over"]


async def test_a_tool_call_waits_for_the_clients_result(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "tool")
    await runtime.send(sid, [{"type": "text", "text": "go"}])
    for _ in range(100):
        if (await sessions.state(sid)).fold.tool_call("c1") is not None:
            break
        await asyncio.sleep(0.01)
    assert (await sessions.state(sid)).fold.status == ev.PAUSED
    await runtime.tool_result(sid, "c1", output=42)
    await wait_idle(sessions, sid)
    assert (await sessions.state(sid)).fold.branch()[-1].text == "got 42"
    with pytest.raises(InvalidInput):
        await runtime.tool_result(sid, "no-such-call", output=1)


async def test_a_null_result_is_an_answer_and_a_second_one_is_refused(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "tool")
    await runtime.send(sid, [{"type": "text", "text": "go"}])
    for _ in range(100):
        if (await sessions.state(sid)).fold.tool_call("c1") is not None:
            break
        await asyncio.sleep(0.01)
    await runtime.tool_result(sid, "c1", output=None)
    await wait_idle(sessions, sid)
    assert (await sessions.state(sid)).fold.branch()[-1].text == "got None"
    with pytest.raises(Conflict):
        await runtime.tool_result(sid, "c1", output="again")


async def test_edit_and_regenerate_make_branches(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "echo")
    first, _, _ = await runtime.send(sid, [{"type": "text", "text": "one"}])
    await wait_idle(sessions, sid)
    await runtime.regenerate(sid, (await sessions.state(sid)).fold.leaf or "")
    await wait_idle(sessions, sid)
    fold = (await sessions.state(sid)).fold
    assert len(fold.children[first]) == 2
    edited, _, _ = await runtime.edit(sid, first, [{"type": "text", "text": "uno"}])
    await wait_idle(sessions, sid)
    fold = (await sessions.state(sid)).fold
    assert [m.text for m in fold.branch()] == ["uno", "echo: uno"]
    assert fold.children[None] == [first, edited]


async def test_runs_left_open_by_a_dead_process_end_as_interrupted() -> None:
    store = MemoryStore()
    await store.open()
    sessions = SessionService(store)
    sid = (await sessions.create(owner=None, model=None, agent="echo", system=None, title=None)).id
    await sessions.append(sid, [ev.event(ev.RUN_START, run_id="run_dead", trigger="u")])
    await store.put_record(RUNS, "run_dead", orjson.dumps({"session_id": sid, "worker": "gone"}))

    runtime = Runtime(sessions, lambda record: echo)
    await runtime.start()
    try:
        assert run_ends(await events(sessions, sid)) == [("run_dead", ev.INTERRUPTED)]
        assert (await sessions.state(sid)).fold.status == ev.IDLE
        assert await store.list_records(RUNS) == []
    finally:
        await runtime.aclose()
        await store.aclose()


async def counting(ctx: RunContext) -> None:
    for i in range(100):
        await ctx.text(f"{i} ")
        await asyncio.sleep(0.005)


def restartable(sessions: SessionService) -> Runtime:
    """A runtime on ``sessions`` whose shutdown gives running steps 50 ms."""
    agents = {**AGENTS, "counting": counting}
    return Runtime(
        sessions, lambda record: agents[record.agent or ""], policy=RunPolicy(shutdown_grace=0.05)
    )


async def test_shutdown_leaves_a_running_run_open_and_the_next_start_continues_it(env) -> None:
    sessions, _ = env
    first = restartable(sessions)
    await first.start()
    sid = await new_session(sessions, "counting")
    _, run_id, _ = await first.send(sid, [{"type": "text", "text": "go"}])
    await asyncio.sleep(0.1)
    await first.aclose()
    assert run_ends(await events(sessions, sid)) == []
    assert [key for key, _ in await sessions.store.list_records(RUNS)] == [run_id]

    second = restartable(sessions)
    await second.start()
    try:
        await wait_idle(sessions, sid)
    finally:
        await second.aclose()
    log = await events(sessions, sid)
    assert run_ends(log) == [(run_id, ev.COMPLETE)]
    assert [e["run_id"] for e in log if e["type"] == ev.RUN_RESUME] == [run_id]
    fold = (await sessions.state(sid)).fold
    assert fold.branch()[-1].text == "".join(f"{i} " for i in range(100))


async def test_cancel_right_after_send_still_ends_the_run_once(env) -> None:
    sessions, runtime = env
    sid = await new_session(sessions, "slow")
    _, run_id, _ = await runtime.send(sid, [{"type": "text", "text": "go"}])
    await runtime.cancel(sid)  # the run's task has not taken its first step yet
    await wait_idle(sessions, sid)
    await asyncio.sleep(0.05)
    assert run_ends(await events(sessions, sid)) == [(run_id, ev.CANCELLED)]
    assert (await sessions.state(sid)).fold.status == ev.IDLE


async def test_shutdown_right_after_send_leaves_the_run_to_the_next_start(env) -> None:
    sessions, _ = env
    first = restartable(sessions)
    await first.start()
    sid = await new_session(sessions, "counting")
    _, run_id, _ = await first.send(sid, [{"type": "text", "text": "go"}])
    await first.aclose()  # the run's task has not taken its first step yet
    assert run_ends(await events(sessions, sid)) == []
    second = restartable(sessions)
    await second.start()
    try:
        await wait_idle(sessions, sid)
    finally:
        await second.aclose()
    assert run_ends(await events(sessions, sid)) == [(run_id, ev.COMPLETE)]
