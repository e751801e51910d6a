"""Seeding: earlier turns of a conversation placed in a session, running nothing.

For clients that hold the conversation themselves (the OpenAI-compatible
gateway sends the whole history with every request): the turns the session
does not have yet are written as finished messages after its leaf, by the
session's driver, in one atomic batch.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from tether.runtime.driver import Drivers
from tether.runtime.errors import Conflict, InvalidInput
from tether.sessions import events as ev
from tether.store.errors import LeaseLost


async def seed(drivers: Drivers, session_id: str, messages: list[dict[str, Any]]) -> str | None:
    """Place ``messages`` after the session's leaf; returns the new leaf's id.

    Each item is ``{"role": "user", "text": ...}`` or ``{"role": "assistant",
    "text": ..., "tool_calls": [{"id", "name", "arguments", "result"?,
    "error"?}]}`` (arguments as JSON text or a value; a call with a ``result``
    or ``error`` gets a tool-result). The old leaf if ``messages`` is empty.
    Conflict while a run is active or queued.
    """
    driver = await drivers.drive(session_id)
    try:
        if driver is None or driver.run is not None or driver.queue:
            raise Conflict("a session can be seeded only while it is idle")
        fold = await driver.fold()
        if fold.active_run is not None:  # suspended: waiting on a person, with no task
            raise Conflict("a session can be seeded only while it is idle")
        leaf = fold.leaf
        batch: list[ev.Event] = []
        for msg in messages:
            message_id = ev.new_id("msg")
            if msg["role"] == "user":
                batch.append(
                    ev.event(
                        ev.USER_MESSAGE, message_id=message_id, parent_id=leaf,
                        parts=[{"type": "text", "text": msg.get("text", "")}],
                    )
                )  # fmt: skip
            elif msg["role"] == "assistant":
                batch += _seeded_answer(message_id, leaf, msg)
            else:
                raise InvalidInput(f"cannot seed a message with role {msg['role']!r}")
            leaf = message_id
        if batch:
            try:
                await driver.append(batch)
            except LeaseLost:
                raise Conflict("the session was taken over by another replica") from None
        return leaf
    finally:
        if driver is not None:
            await drivers.next(session_id)


def _seeded_answer(message_id: str, parent_id: str | None, msg: dict[str, Any]) -> list[ev.Event]:
    """The events of a finished assistant message: its text, tool calls and their results."""
    out = [ev.event(ev.MESSAGE_START, message_id=message_id, role="assistant", parent_id=parent_id)]
    results: list[ev.Event] = []
    n = 0
    if msg.get("text"):
        n += 1
        part_id = f"{message_id}:{n}"
        out += [
            ev.event(ev.PART_START, message_id=message_id, part_id=part_id, kind=ev.TEXT),
            ev.event(ev.PART_DELTA, part_id=part_id, delta=msg["text"]),
            ev.event(ev.PART_END, part_id=part_id),
        ]
    for call in msg.get("tool_calls", ()):
        n += 1
        part_id = f"{message_id}:{n}"
        value = call.get("arguments")
        if isinstance(value, str):
            # Text that is not JSON stays as it is, as RunContext.tool_call does.
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        out += [
            ev.event(
                ev.PART_START, message_id=message_id, part_id=part_id, kind=ev.TOOL_CALL,
                tool_call_id=call["id"], tool_name=call["name"],
            ),
            ev.event(ev.PART_END, part_id=part_id, value={} if value is None else value),
        ]  # fmt: skip
        if call.get("result") is not None or call.get("error") is not None:
            results.append(
                ev.event(
                    ev.TOOL_RESULT, tool_call_id=call["id"], output=call.get("result"),
                    error=call.get("error"),
                )
            )  # fmt: skip
    out.append(ev.event(ev.MESSAGE_END, message_id=message_id, status="complete"))
    return out + results
