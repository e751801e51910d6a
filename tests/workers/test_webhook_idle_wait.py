"""The webhook handler waits for a wake's runs on the runtime's own signal, not a timer.

A real server delivers a real wake; tether's handler serves it in this process
(so the test can watch the event loop it runs on) with an agent the test holds
open. While the run works, nothing in the process should wake on a short timer;
when it ends, the handler answers without waiting for one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from subscriptions.harness import Receiver, start_receiver
from tether import App
from tether.agents.context import AgentContext
from tether.agents.webhook_handler import WebhookHandler
from tether.providers.registry import ProviderRegistry
from workers.test_webhook_mode import _env, webhook_server
from workers.test_workers import new_session, send

#: How long the test watches the loop while the run is held open.
WATCH = 1.0
#: A timer this short, scheduled again and again, is a poll.
SHORT = 0.5


class Gate:
    """An agent that writes a word, then waits until the test opens the gate."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.open = asyncio.Event()
        self.app = App()
        self.app.agent("gate")(self.run)

    async def run(self, ctx: AgentContext) -> None:
        await ctx.text("held ")
        self.started.set()
        await self.open.wait()
        await ctx.text("done")


class Timers:
    """Every timer the running loop schedules while :meth:`watch` is on (loop.call_at
    is what call_later, asyncio.sleep and wait_for timeouts all come to)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.delays: list[float] = []

    def watch(self) -> None:
        original: Callable[..., Any] = self.loop.call_at

        def call_at(when: float, *args: Any, **kwargs: Any) -> Any:
            self.delays.append(when - self.loop.time())
            return original(when, *args, **kwargs)

        self.loop.call_at = call_at  # type: ignore[method-assign]

    def stop(self) -> None:
        del self.loop.call_at

    def short(self) -> list[float]:
        return [round(d, 3) for d in self.delays if d < SHORT]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state, runner = await start_receiver()  # answers 200 {}: the wake stays open
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_the_handler_sleeps_while_the_run_works_and_answers_when_it_ends(
    tmp_path: Path, receiver: Receiver
) -> None:
    """No short timer fires again and again while a run works (the old code looked
    every 50 ms), and the answer comes right after the run's end, not a poll later."""
    gate = Gate()
    async with (
        webhook_server(tmp_path, {"gate": receiver.url}, _env()) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        handler = WebhookHandler(gate.app, server.base_url, registry=ProviderRegistry(),
                                 sync_budget=30.0)  # fmt: skip
        try:
            session_id = await new_session(c, {"agent": "gate"})
            await send(c, session_id)
            delivery = await receiver.next()
            served = asyncio.create_task(handler.handle(delivery.raw, delivery.signature))
            await asyncio.wait_for(gate.started.wait(), 20)
            await asyncio.sleep(0.2)  # the run's opening appends are answered

            timers = Timers()
            timers.watch()
            try:
                await asyncio.sleep(WATCH)
            finally:
                timers.stop()
            # The test's own sleep is one timer; the heartbeat and lease renewals are
            # seconds apart. A poll would add one per period (20 at 50 ms).
            assert len(timers.short()) <= 2, timers.short()

            opened = time.monotonic()
            gate.open.set()
            status, answer = await asyncio.wait_for(served, 20)
            took = time.monotonic() - opened
            assert (status, answer) == (200, {"done": True})
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            assert snap["status"] == "idle"
            # Loose: the run's last appends and its lease's release over loopback HTTP.
            assert took < 2.0, took
        finally:
            gate.open.set()
            await handler.aclose()
