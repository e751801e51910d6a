"""Usage totals, the context budget, statuses and the session list, over real HTTP.

A real ``tether serve`` child process on SQLite, configured by a TOML file
with one OpenAI-compatible upstream (the fake, speaking OpenAI's streaming
format): ``up/m`` has no context budget, ``up/small`` one of 60 tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from tether.client import AsyncTether
from tether.sessions.service import INDEXED, META, RECORDS, SessionRecord
from tether.store.sqlite import SqliteStore

KEY = "sk-up-list-7c1e"
BUDGET = 60

Event = dict[str, Any]


def config(path: Path, fake: FakeUpstream) -> Path:
    path.write_text(
        "[[upstreams]]\n"
        'name = "up"\n'
        'kind = "openai"\n'
        f'base_url = "{fake.openai_base_url}"\n'
        'api_key_env = "UP_KEY"\n'
        'models = ["m", "small"]\n'
        f"context_tokens = {{small = {BUDGET}}}\n"
    )
    return path


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, httpx.AsyncClient]]:
    async with FakeUpstream() as fake:
        env = {**os.environ, "UP_KEY": KEY, "TETHER_CONFIG": str(config(tmp_path / "t.toml", fake))}
        env.pop("TETHER_API_KEYS", None)
        async with (
            TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
        ):
            yield fake, c


async def new_session(c: httpx.AsyncClient, model: str = "up/m", **body: Any) -> str:
    r = await c.post("/v1/sessions", json={"model": model, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def send(c: httpx.AsyncClient, sid: str, content: str) -> str:
    r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": content})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def events_until(
    c: httpx.AsyncClient, sid: str, done: Callable[[Event], bool]
) -> list[Event]:
    """The session's events from its start, up to the first that ``done`` accepts."""
    out: list[Event] = []
    async with (
        asyncio.timeout(20),
        c.stream("GET", f"/v1/sessions/{sid}/events", params={"offset": "-1"}) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if done(out[-1]):
                    return out
    raise AssertionError("the event stream ended first")


async def run_ends(c: httpx.AsyncClient, sid: str, run_id: str) -> list[Event]:
    return await events_until(c, sid, lambda e: e["type"] == "run-end" and e["run_id"] == run_id)


async def listed(c: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    r = await c.get("/v1/sessions", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["sessions"])


async def listing_of(c: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    return next(s for s in await listed(c) if s["id"] == sid)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check``: the list is read from records, which have no event to await."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def until_listed(c: httpx.AsyncClient, sid: str, **want: Any) -> None:
    """Wait until the list shows ``sid`` with the fields ``want`` (its record is written
    right after the events that changed them)."""

    async def shown() -> bool:
        entry = await listing_of(c, sid)
        return all(entry[k] == v for k, v in want.items())

    await until(shown)


async def test_the_list_carries_each_sessions_usage_totals_after_two_runs(setup) -> None:
    fake, c = setup
    fake.script = Script(text="ok", usage=(1200, 300), cache=(1024, 0), reasoning_tokens=256)
    sid = await new_session(c)
    other = await new_session(c)
    for text in ("one", "two"):
        await run_ends(c, sid, await send(c, sid, text))
    totals = {
        "input_tokens": 2400,
        "output_tokens": 600,
        "cache_read_tokens": 2048,
        "reasoning_tokens": 512,
    }
    await until_listed(c, sid, usage=totals)
    assert (await c.get(f"/v1/sessions/{sid}")).json()["usage"] == totals
    assert (await listing_of(c, other))["usage"] == {}


async def test_a_budget_trims_the_oldest_turns_and_the_run_says_so(setup) -> None:
    fake, c = setup
    fake.script = Script(text="Hello from the fake upstream.")  # 12 tokens by estimate
    sid = await new_session(c, "up/small", system="Be brief.")  # 7 tokens
    first, second = "first " * 20, "second " * 17  # 34 and 34 tokens
    for text in (first, second):
        await run_ends(c, sid, await send(c, sid, text))
    sent_before = len(fake.requests)
    run_id = await send(c, sid, "third?")  # 6 tokens: 7 + 46 + 46 + 6 = 105 > 60
    evs = await run_ends(c, sid, run_id)

    assert len(fake.requests) == sent_before + 1
    sent = fake.requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": second},
        {"role": "assistant", "content": "Hello from the fake upstream."},
        {"role": "user", "content": "third?"},
    ]
    trims = [e for e in evs if e["type"] == "context-trim" and e["run_id"] == run_id]
    assert [(t["dropped"], t["tokens"], t["budget"]) for t in trims] == [(2, 59, BUDGET)]
    # The session keeps everything: only what the model is sent is trimmed.
    snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
    assert len(snapshot["messages"]) == 6

    # A model without a budget is sent the whole branch.
    whole = await new_session(c, "up/m", system="Be brief.")
    for text in (first, second, "third?"):
        evs = await run_ends(c, whole, await send(c, whole, text))
    assert len(fake.requests[-1].body["messages"]) == 6
    assert not [e for e in evs if e["type"] == "context-trim"]


async def test_a_session_waiting_on_a_tool_result_is_paused_in_the_snapshot_and_the_list(
    setup,
) -> None:
    fake, c = setup
    fake.script = Script(text="", tool_calls=[FakeToolCall("lookup", '{"q": "x"}', "call_1")])
    sid = await new_session(c)
    run_id = await send(c, sid, "look it up")
    await events_until(c, sid, lambda e: e["type"] == "status" and e["status"] == "paused")
    assert (await c.get(f"/v1/sessions/{sid}")).json()["status"] == "paused"
    await until_listed(c, sid, status="paused")
    fake.script = Script(text="Found.")
    r = await c.post(
        f"/v1/sessions/{sid}/tool-results", json={"tool_call_id": "call_1", "output": 1}
    )
    assert r.status_code == 202, r.text
    await run_ends(c, sid, run_id)
    assert (await c.get(f"/v1/sessions/{sid}")).json()["status"] == "idle"
    await until_listed(c, sid, status="idle")


async def test_a_failed_run_leaves_the_status_error_and_the_next_run_clears_it(setup) -> None:
    fake, c = setup
    sid = await new_session(c)
    fake.fail_next(status=400, message="This model cannot do that.")
    failed = await send(c, sid, "fail")
    evs = await run_ends(c, sid, failed)
    assert evs[-1]["reason"] == "error"
    assert (await c.get(f"/v1/sessions/{sid}")).json()["status"] == "error"
    await until_listed(c, sid, status="error")
    fine = await send(c, sid, "again")
    evs = await run_ends(c, sid, fine)
    # Up to the second run's end: the status went from error to running when it started.
    statuses = [e["status"] for e in evs if e["type"] == "status"]
    assert statuses == ["running", "error", "running"]
    assert (await c.get(f"/v1/sessions/{sid}")).json()["status"] == "idle"
    await until_listed(c, sid, status="idle")


async def test_sending_a_message_moves_a_session_to_the_top_of_the_list(setup) -> None:
    _, c = setup
    older = await new_session(c)
    newer = await new_session(c)
    assert [s["id"] for s in await listed(c)][:2] == [newer, older]
    before = (await listing_of(c, older))["updated_at"]
    run_id = await send(c, older, "bump")

    async def on_top() -> bool:
        top = (await listed(c))[0]
        return bool(top["id"] == older and top["updated_at"] > before)

    await until(on_top)  # as the run starts, before it ends
    await run_ends(c, older, run_id)
    assert [s["id"] for s in await listed(c)][:2] == [older, newer]


async def test_a_gateway_session_is_listed_only_when_asked_for(setup) -> None:
    _, c = setup
    mine = await new_session(c)
    ask = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}]}
    r = await c.post("/v1/chat/completions", json=ask)
    assert r.status_code == 200, r.text
    gateway = r.headers["x-tether-session-id"]

    default = [s["id"] for s in await listed(c)]
    assert mine in default and gateway not in default
    everything = [s["id"] for s in await listed(c, gateway="true")]
    assert gateway in everything and mine in everything
    assert gateway not in [s["id"] for s in await listed(c, archived="true")]
    assert gateway in [s["id"] for s in await listed(c, archived="true", gateway="true")]
    assert (await c.get("/v1/sessions", params={"gateway": "maybe"})).status_code == 422

    async with AsyncTether(str(c.base_url)) as sdk:
        assert gateway not in [s.id for s in await sdk.sessions.list()]
        found = {s.id: s for s in await sdk.sessions.list(gateway=True)}
    assert gateway in found and found[mine].usage == {} and found[mine].status == "idle"


def test_a_store_indexed_before_gateway_sessions_were_hidden_is_filed_again(
    tmp_path: Path,
) -> None:
    """A data dir listed by the previous version: its gateway sessions leave the default list."""
    data = tmp_path / "data"

    async def old_store() -> tuple[str, str]:
        store = SqliteStore(data / "tether.db")
        await store.open()
        now = 1_700_000_000.0
        chat = SessionRecord("ses_chat", None, "chat", "demo", None, None, now, now)
        gw = SessionRecord("ses_gw", None, "gw", "demo", None, None, now + 1, now + 1)
        gw.metadata = {"gateway": {"tools": ["f"]}}
        for record in (chat, gw):
            await store.put_record(RECORDS, record.id, stored_before(record))
            key = f"{10**16 - int(record.updated_at * 1_000_000):016d}:{record.id}"
            for listing in ("sessions:-", "sessions-live:-"):  # the previous version's two
                await store.index_put(listing, record.id, key)
        await store.put_record(META, "sessions-indexed", b"1")
        await store.aclose()
        return chat.id, gw.id

    chat, gw = asyncio.run(old_store())
    assert INDEXED != "sessions-indexed"
    with TetherServer(data, log_path=tmp_path / "s.log") as srv:
        default = httpx.get(srv.base_url + "/v1/sessions").json()["sessions"]
        everything = httpx.get(srv.base_url + "/v1/sessions?gateway=true").json()["sessions"]
    assert [s["id"] for s in default] == [chat]
    assert [s["id"] for s in everything] == [gw, chat]
    assert default[0]["status"] == "idle" and default[0]["usage"] == {}


def stored_before(record: SessionRecord) -> bytes:
    """The record as the previous version stored it: without status and usage."""
    stored = json.loads(record.to_bytes())
    del stored["status"], stored["usage"]
    return json.dumps(stored).encode()
