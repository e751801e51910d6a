"""``/metrics`` after a scripted workload: every family there, with the counts the workload made.

A real ``tether serve`` child with a key, the demo model and an OpenAI-
compatible upstream (FakeUpstream), scraped on its ``--metrics-port`` and
parsed with prometheus_client's own text parser. The workload: four runs that
complete (one after a retry, one continued after it was suspended waiting on
a tool result), one that fails after its retries, one cancelled while it
streams with another queued behind it (cancelled before it starts), and one
gateway completion whose first upstream request gets a 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from helpers.server import TetherServer, find_free_port
from helpers.session_events import server_env, start
from providers.fake_upstreams import FakeUpstream
from tether.api.auth import key_identity

KEY = "k-metrics-alpha-7f3a91c2"
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
TIMEOUT = 30.0


@dataclass
class Scrape:
    """One scrape: the families it names, and each sample's value by name and labels."""

    families: set[str]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def count(self, family: str, **labels: str) -> float:
        """The number of observations of histogram ``family`` with ``labels``."""
        return self.value(f"{family}_count", **labels)


def parse(text: str) -> Scrape:
    families: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(families, samples)


@dataclass
class Setup:
    fake: FakeUpstream
    server: TetherServer
    client: httpx.AsyncClient
    metrics_url: str

    async def scrape(self) -> Scrape:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(self.metrics_url)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        return parse(r.text)

    async def scrape_until(self, check: Callable[[Scrape], bool]) -> Scrape:
        """Scrape until ``check`` holds (the server notices a reader leave on its own time)."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            scrape = await self.scrape()
            if check(scrape):
                return scrape
            assert asyncio.get_running_loop().time() < deadline, "not reached in time"
            await asyncio.sleep(0.05)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    metrics_port = find_free_port()
    async with FakeUpstream() as fake:
        env = {**server_env(fake), "TETHER_API_KEYS": KEY}
        server = TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=env,
            extra_args=["--metrics-port", str(metrics_port), "--suspend-after", "0.2"],
        )
        with server:
            headers = {"authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(
                base_url=server.base_url, headers=headers, timeout=TIMEOUT
            ) as client:
                yield Setup(fake, server, client, f"http://127.0.0.1:{metrics_port}/metrics")


def of(kind: str, run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and e.get("run_id") == run_id


async def run(c: httpx.AsyncClient, content: str) -> str:
    """A demo run to its end; its reason."""
    _, run_id, events = await start(c, {"model": "demo"}, {"content": content})
    try:
        return str((await events.run_end(run_id))["reason"])
    finally:
        await events.aclose()


async def cancel_one_with_one_queued(s: Setup) -> None:
    """A streaming run with a second queued behind it: both cancelled (queued: 1 meanwhile)."""
    c = s.client
    sid, run_id, events = await start(c, {"model": "demo"}, {"content": "/count 300 50"})
    try:
        await events.until(lambda e: e["type"] == "part-delta")
        r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "hello"})
        assert r.status_code == 202 and r.json()["queued"] is True
        busy = await s.scrape()
        assert busy.value("tether_runs_active") == 1
        assert busy.value("tether_runs_queued") == 1
        assert (await c.post(f"/v1/sessions/{sid}/cancel", json={})).status_code == 202
        assert (await events.run_end(run_id))["reason"] == "cancelled"
        await events.run_end(r.json()["run_id"])
    finally:
        await events.aclose()


async def suspend_then_answer(s: Setup) -> None:
    """A run that waits on a client tool past --suspend-after, then gets its result."""
    c = s.client
    sid, run_id, events = await start(
        c, {"model": "demo", "tools": [WEATHER]}, {"content": "/tool get_weather"}
    )
    try:
        call = await events.until(lambda e: e["type"] == "part-start" and "tool_call_id" in e)
        await events.until(of("run-suspend", run_id))
        waiting = await s.scrape()
        assert waiting.value("tether_runs_suspended") == 1
        assert waiting.value("tether_runs_active") == 0
        r = await c.post(
            f"/v1/sessions/{sid}/tool-results",
            json={"tool_call_id": call["tool_call_id"], "output": {"sky": "clear"}},
        )
        assert r.status_code == 202, r.text
        assert (await events.run_end(run_id))["reason"] == "complete"
    finally:
        await events.aclose()


async def gateway_completion_after_a_503(s: Setup) -> None:
    s.fake.fail_next(1, status=503)
    r = await s.client.post(
        "/v1/chat/completions",
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    assert len(s.fake.requests) == 2


async def one_reader_of_each_kind(s: Setup) -> Scrape:
    """A scrape while one SSE reader and one WebSocket reader follow a session."""
    sid, run_id, events = await start(s.client, {"model": "demo"}, {"content": "hello"})
    try:
        await events.run_end(run_id)
        ws_url = s.server.base_url.replace("http", "ws", 1) + f"/v1/sessions/{sid}/ws?offset=-1"
        async with connect(ws_url, additional_headers={"authorization": f"Bearer {KEY}"}) as ws:
            json.loads(await ws.recv())  # it is connected and reading
            return await s.scrape()
    finally:
        await events.aclose()


async def test_a_scripted_workload_shows_in_every_family_with_its_counts(setup: Setup) -> None:
    s, c = setup, setup.client
    assert await run(c, "hello") == "complete"
    assert await run(c, "/reason hi") == "complete"
    retried, failed = await asyncio.gather(run(c, "/fail 1 ok"), run(c, "/fail 5 no"))
    assert (retried, failed) == ("complete", "error")
    await cancel_one_with_one_queued(s)
    await suspend_then_answer(s)
    await gateway_completion_after_a_503(s)
    # Every reader above has left: none is counted any more.
    await s.scrape_until(lambda m: m.value("tether_readers", transport="sse") == 0)
    reading = await one_reader_of_each_kind(s)
    assert reading.value("tether_readers", transport="sse") == 1
    assert reading.value("tether_readers", transport="websocket") == 1

    m = await s.scrape_until(lambda m: m.value("tether_readers", transport="sse") == 0)
    demo, gpt = "demo", "openai/gpt-4o-mini"
    # Runs: started at their start; ended by reason (the queued run never started).
    assert m.value("tether_runs_started_total", model=demo) == 7
    assert m.value("tether_runs_ended_total", model=demo, reason="complete") == 5
    assert m.value("tether_runs_ended_total", model=demo, reason="error") == 1
    assert m.value("tether_runs_ended_total", model=demo, reason="cancelled") == 2
    assert m.value("tether_runs_started_total", model=gpt) == 1
    assert m.value("tether_runs_ended_total", model=gpt, reason="complete") == 1
    # Timed from the start of each run that ran here; the first token of the
    # runs that streamed text or reasoning from their start (not the failed
    # one, not the one continued after its suspension).
    assert m.count("tether_run_duration_seconds", model=demo) == 7
    assert m.count("tether_run_first_token_seconds", model=demo) == 5
    assert m.count("tether_run_first_token_seconds", model=gpt) == 1
    # Tokens by model, key identity (never the key) and kind.
    who = key_identity(KEY)
    assert m.value("tether_tokens_total", model=gpt, key=who, kind="input") == 11
    assert m.value("tether_tokens_total", model=gpt, key=who, kind="output") == 7
    assert m.value("tether_tokens_total", model=demo, key=who, kind="output") > 0
    assert all(KEY not in str(labels) for _, labels in m.samples)
    # Nothing runs, waits or reads now.
    for gauge in ("tether_runs_active", "tether_runs_queued", "tether_runs_suspended"):
        assert m.value(gauge) == 0, gauge
    # Upstreams: each request by status, errors, retries (demo's say no HTTP status).
    assert m.value("tether_upstream_requests_total", upstream="openai", status="503") == 1
    assert m.value("tether_upstream_requests_total", upstream="openai", status="200") == 1
    assert m.value("tether_upstream_errors_total", upstream="openai", status="503") == 1
    assert m.value("tether_upstream_retries_total", upstream="openai", status="503") == 1
    assert m.value("tether_upstream_retries_total", upstream="demo", status="none") == 1 + 4
    assert m.value("tether_upstream_up", upstream="openai") == 1
    assert m.count("tether_gateway_added_latency_seconds", upstream="openai") == 1
    # The store: appends counted per commit, and the commits timed.
    assert m.value("tether_store_appends_total", store="sqlite") > 0
    assert m.count("tether_store_commit_seconds", store="sqlite") > 0
    assert m.value("tether_ready") == 1
    # On SQLite nothing takes a lease over; the families are there all the same.
    assert m.value("tether_lease_takeovers_total") == 0
    assert {"tether_lease_takeovers", "tether_lease_renew_failures"} <= m.families
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= m.families


async def test_the_main_port_serves_metrics_to_a_key_only(setup: Setup) -> None:
    s = setup
    async with httpx.AsyncClient(base_url=s.server.base_url, timeout=10) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
        sid = (await s.client.post("/v1/sessions", json={"model": "demo"})).json()["id"]
        token = (await s.client.post(f"/v1/sessions/{sid}/read-token")).json()["token"]
        assert (await anonymous.get("/metrics", params={"token": token})).status_code == 401
    keyed = await s.client.get("/metrics")
    assert keyed.status_code == 200
    assert "tether_runs_started_total" in keyed.text or "tether_runs_started" in keyed.text
    assert "tether_ready 1.0" in keyed.text
