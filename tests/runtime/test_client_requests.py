"""A run's client requests, on a bare RunContext: what it writes, in which order, and replay.

The end-to-end behaviour (answers over HTTP, replicas, the UI) is in
tests/api/test_client_channel_e2e.py; here, the context's own rules, with
nothing but an in-memory log.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.runtime import client_requests as rpc
from tether.runtime.context import RunContext
from tether.runtime.journal import Resumption
from tether.sessions import events as ev

Event = dict[str, Any]


def context(written: list[Event], **more: Any) -> RunContext:
    async def append(events: list[Event]) -> int:
        written.extend(events)
        return len(written)

    async def on_status(status: str) -> None:
        written.append(ev.event(ev.STATUS, status=status))

    return RunContext(
        session_id="s", run_id="run_1", message_id="msg_a", model_name=None, system=None,
        history=[], append=append, waiters={}, on_status=on_status, **more,
    )  # fmt: skip


async def test_a_timed_out_request_is_answered_by_the_run_before_it_runs_again() -> None:
    written: list[Event] = []
    ctx = context(written)
    with pytest.raises(rpc.ClientRequestError) as err:
        await ctx.request_client("confirm", {"message": "?"}, timeout=0.05)
    assert err.value.code == rpc.TIMED_OUT
    kinds = [(e["type"], e.get("status") or e.get("op")) for e in written]
    assert kinds == [
        (ev.CLIENT_REQUEST, None),
        (ev.JOURNAL, "request"),
        (ev.STATUS, ev.PAUSED),
        (ev.CLIENT_RESPONSE, None),  # written before the wait ends: every client sees it closed
        (ev.STATUS, ev.RUNNING),
    ]
    assert written[3]["run_id"] == "run_1" and written[3]["error"]["code"] == rpc.TIMED_OUT
    assert not ctx.waits and ctx.busy == 0


async def test_an_answer_before_the_timeout_is_the_result() -> None:
    written: list[Event] = []
    waiting = asyncio.Event()
    ctx = context(written, on_wait=waiting.set)
    asking = asyncio.create_task(ctx.request_client("ping", None, timeout=30))
    await waiting.wait()
    assert ctx.busy == 1  # a timed wait keeps its task: the run is not suspended
    ctx._waiters["request:req_run_1_1"].set_result({"result": None})
    assert await asking is None
    assert [e["type"] for e in written].count(ev.CLIENT_RESPONSE) == 0  # the client's is not ours


async def test_a_continued_run_does_not_ask_again_and_gets_the_logged_answer() -> None:
    first: list[Event] = []
    waiting = asyncio.Event()
    ctx = context(first, on_wait=waiting.set)
    asking = asyncio.create_task(ctx.request_client("confirm", {"message": "?"}))
    await waiting.wait()
    asking.cancel()  # the run stops here (suspended, or its process went away)
    with pytest.raises(asyncio.CancelledError):
        await asking
    journal = [e for e in first if e["type"] == ev.JOURNAL]
    again: list[Event] = []
    ctx = context(again, resumption=Resumption(entries=journal))
    ctx._waiters["request:req_run_1_1"] = fut = asyncio.get_running_loop().create_future()
    fut.set_result({"result": {"confirmed": True}})  # the answer its log holds
    assert await ctx.request_client("confirm", {"message": "?"}) == {"confirmed": True}
    assert [e for e in again if e["type"] == ev.CLIENT_REQUEST] == []
