"""Thinking signatures through the run context, the grammar and the fold.

A signed reasoning part ends with a part-end carrying ``signature``; redacted
thinking is a reasoning part with no deltas whose part-end carries
``redacted``. The server fold keeps both on the part (the web UI's fold is
held to the same by tests/fixtures/folds-by-hand/reasoning-signatures.json).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sessions.grammar import violations
from tether.runtime.context import RunContext
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold


async def context_events() -> list[dict[str, Any]]:
    written: list[dict[str, Any]] = [
        ev.event(ev.USER_MESSAGE, message_id="msg_u", parts=[{"type": "text", "text": "hi"}]),
        ev.event(ev.RUN_START, run_id="run_1", trigger="msg_u", model="m", worker="w"),
        ev.event(ev.STATUS, status=ev.RUNNING),
        ev.event(
            ev.MESSAGE_START,
            run_id="run_1",
            message_id="msg_a",
            role="assistant",
            parent_id="msg_u",
        ),
    ]

    async def append(events: list[dict[str, Any]]) -> int:
        written.extend(events)
        return len(written)

    async def on_status(_: str) -> None:
        return None

    waiters: dict[str, asyncio.Future[Any]] = {}
    ctx = RunContext(
        session_id="s",
        run_id="run_1",
        message_id="msg_a",
        model_name="m",
        system=None,
        history=[],
        append=append,
        waiters=waiters,
        on_status=on_status,
    )
    await ctx.reasoning("Let me ")
    await ctx.reasoning("think.")
    await ctx.reasoning_signature("sig-1")
    await ctx.redacted_reasoning("ENC==")
    await ctx.reasoning_signature("sig-2")  # signed reasoning with no visible text
    await ctx.text("Hello")
    await ctx.finish()
    written.append(ev.event(ev.RUN_END, run_id="run_1", reason=ev.COMPLETE))
    written.append(ev.event(ev.STATUS, status=ev.IDLE))
    return written


async def test_the_context_records_signatures_on_reasoning_part_ends() -> None:
    events = await context_events()
    ends = [e for e in events if e["type"] == ev.PART_END]
    assert [(e["part_id"], e.get("signature"), e.get("redacted")) for e in ends] == [
        ("msg_a:1", "sig-1", None),
        ("msg_a:2", None, "ENC=="),
        ("msg_a:3", "sig-2", None),
        ("msg_a:4", None, None),
    ]
    assert violations(events) == []


async def test_the_fold_keeps_signatures_and_redacted_reasoning() -> None:
    fold = SessionFold()
    fold.apply_all(await context_events())
    parts = fold.snapshot()["messages"][-1]["parts"]
    assert [(p["kind"], p["text"], p.get("signature"), p.get("redacted")) for p in parts] == [
        ("reasoning", "Let me think.", "sig-1", None),
        ("reasoning", "", None, "ENC=="),
        ("reasoning", "", "sig-2", None),
        ("text", "Hello", None, None),
    ]


def test_the_grammar_refuses_a_signature_on_a_text_part() -> None:
    events = [
        ev.event(ev.USER_MESSAGE, message_id="u", parts=[]),
        ev.event(ev.RUN_START, run_id="r", trigger="u", model="m", worker="w"),
        ev.event(ev.STATUS, status=ev.RUNNING),
        ev.event(ev.MESSAGE_START, run_id="r", message_id="a", role="assistant", parent_id="u"),
        ev.event(ev.PART_START, run_id="r", message_id="a", part_id="a:1", kind=ev.TEXT),
        ev.event(ev.PART_END, run_id="r", part_id="a:1", signature="x"),
    ]
    assert any("signature" in p for p in violations(events, finished=False))
