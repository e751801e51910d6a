"""Several runtimes on one Redis: any replica takes any request for any session.

Each replica here is a ``Runtime`` with its own ``RedisStore`` connection, its
own session service and its own lease owner name, in one event loop: what
they share is exactly what separate processes share, the Redis keys. The
process-level version (SIGKILL of a real server) is tests/api/test_scaleout.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import pytest
import redis.asyncio as aioredis

from redis_server import RedisServer, running_redis
from tether.runtime.context import RunContext
from tether.runtime.runner import RUNS, Agent, Runtime, lease_name
from tether.sessions import events as ev
from tether.sessions.service import SessionRecord, SessionService, stream_name
from tether.store.redis import RedisStore

LEASE_TTL = 1.0
REAP_INTERVAL = 0.2


async def slow(ctx: RunContext) -> None:
    for i in range(1000):
        await ctx.text(f"{i} ")
        await asyncio.sleep(0.01)


async def brief(ctx: RunContext) -> None:
    for word in ("re:", ctx.history[-1].text):
        await ctx.text(word + " ")
        await asyncio.sleep(0.05)


async def asks_tool(ctx: RunContext) -> None:
    outcome = await ctx.tool_call("lookup", {"q": "x"}, call_id="c1")
    await ctx.text(f"got {outcome.output}")


async def asks_approval(ctx: RunContext) -> None:
    outcome = await ctx.tool_call("rm", {"path": "/"}, call_id="c2", approval=True)
    await ctx.text(f"outcome: {outcome.error or outcome.output}")


AGENTS: dict[str, Agent] = {
    "slow": slow, "brief": brief, "tool": asks_tool, "approval": asks_approval,
}  # fmt: skip


@dataclass
class Replica:
    store: RedisStore
    sessions: SessionService
    runtime: Runtime

    @property
    def worker(self) -> str:
        return self.runtime.worker


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def replicas(redis_server: RedisServer, prefix: str) -> AsyncIterator[list[Replica]]:
    def resolve(record: SessionRecord) -> Agent:
        assert record.agent is not None
        return AGENTS[record.agent]

    out: list[Replica] = []
    for _ in range(3):
        store = RedisStore(redis_server.url(), prefix=prefix)
        await store.open()
        sessions = SessionService(store)
        runtime = Runtime(sessions, resolve, lease_ttl=LEASE_TTL, reap_interval=REAP_INTERVAL)
        await runtime.start()
        out.append(Replica(store, sessions, runtime))
    try:
        yield out
    finally:
        for r in out:
            await r.runtime.aclose()
            await r.store.aclose()


async def events(replica: Replica, sid: str) -> list[ev.Event]:
    res = await replica.store.read(stream_name(sid), 0, 1 << 30)
    return [orjson.loads(c) for c in res.chunks]


async def until(predicate, timeout: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    """Wait for an async predicate; returns the seconds it took."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def of_type(evs: list[ev.Event], kind: str) -> list[ev.Event]:
    return [e for e in evs if e["type"] == kind]


def text(message: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": message}]


async def new_session(replica: Replica, agent: str) -> str:
    record = await replica.sessions.create(
        owner=None, model=None, agent=agent, system=None, title=None
    )
    return record.id


async def idle(replica: Replica, sid: str) -> bool:
    fold = (await replica.sessions.state(sid)).fold
    return fold.active_run is None and not fold.pending()


async def test_a_cancel_posted_to_another_replica_stops_the_run_within_300_ms(
    replicas: list[Replica],
) -> None:
    a, b, _ = replicas
    sid = await new_session(a, "slow")
    _, run_id, _ = await a.runtime.send(sid, text("go"))

    async def streaming() -> bool:
        return len(of_type(await events(b, sid), ev.PART_DELTA)) >= 5

    await until(streaming)
    started = time.monotonic()
    assert await b.runtime.cancel(sid) == [run_id]

    async def ended() -> bool:
        return bool(of_type(await events(b, sid), ev.RUN_END))

    await until(ended, timeout=2)
    assert time.monotonic() - started < 0.3
    evs = await events(b, sid)
    assert [(e["run_id"], e["reason"]) for e in of_type(evs, ev.RUN_END)] == [
        (run_id, ev.CANCELLED)
    ]
    assert of_type(evs, ev.RUN_START)[0]["worker"] == a.worker
    # Nothing of the run comes after its end.
    assert evs.index(of_type(evs, ev.RUN_END)[0]) > max(
        i for i, e in enumerate(evs) if e["type"] == ev.PART_DELTA
    )


async def test_messages_sent_to_any_replica_queue_behind_the_run_and_run_in_order(
    replicas: list[Replica],
) -> None:
    a, b, c = replicas
    sid = await new_session(a, "brief")
    sent = []
    for replica, word in ((a, "one"), (b, "two"), (c, "three"), (b, "four")):
        _, run_id, queued = await replica.runtime.send(sid, text(word))
        sent.append((run_id, queued))
    assert [q for _, q in sent] == [False, True, True, True]

    await until(lambda: idle(a, sid), timeout=10)
    evs = await events(c, sid)
    assert [e["run_id"] for e in of_type(evs, ev.RUN_START)] == [r for r, _ in sent]
    assert [(e["run_id"], e["reason"]) for e in of_type(evs, ev.RUN_END)] == [
        (r, ev.COMPLETE) for r, _ in sent
    ]
    fold = (await c.sessions.state(sid)).fold
    assert [m.text for m in fold.branch() if m.role == "user"] == [
        "one", "two", "three", "four",
    ]  # fmt: skip
    # The queue was announced as it grew, and is empty at the end.
    assert any(len(e["queue"]) == 3 for e in of_type(evs, ev.QUEUE_UPDATE))
    assert fold.queue == [] and fold.pending() == []
    assert await a.store.list_records(RUNS) == []


async def test_a_submit_to_an_idle_session_runs_on_the_replica_that_took_it(
    replicas: list[Replica],
) -> None:
    a, b, _ = replicas
    sid = await new_session(a, "brief")
    await a.runtime.send(sid, text("first"))
    await until(lambda: idle(a, sid))

    async def let_go() -> bool:
        return await a.store.lease_holder(lease_name(sid)) is None

    await until(let_go)  # A lets the session go just after its run ends
    _, _, queued = await b.runtime.send(sid, text("second"))
    assert not queued
    await until(lambda: idle(b, sid))
    starts = of_type(await events(a, sid), ev.RUN_START)
    assert [s["worker"] for s in starts] == [a.worker, b.worker]
    await until(let_go)


async def test_a_tool_result_posted_to_another_replica_reaches_the_run(
    replicas: list[Replica],
) -> None:
    a, b, c = replicas
    sid = await new_session(a, "tool")
    await a.runtime.send(sid, text("look it up"))

    async def waiting() -> bool:
        return (await b.sessions.state(sid)).fold.status == ev.PAUSED

    await until(waiting)
    await b.runtime.tool_result(sid, "c1", output=42)
    await until(lambda: idle(c, sid), timeout=2)
    fold = (await c.sessions.state(sid)).fold
    assert fold.branch()[-1].text == "got 42"
    assert of_type(await events(c, sid), ev.RUN_END)[-1]["reason"] == ev.COMPLETE


async def test_an_approval_posted_to_another_replica_reaches_the_run(
    replicas: list[Replica],
) -> None:
    a, _, c = replicas
    sid = await new_session(a, "approval")
    await a.runtime.send(sid, text("delete everything"))

    async def waiting() -> bool:
        return (await c.sessions.state(sid)).fold.status == ev.PAUSED

    await until(waiting)
    await c.runtime.tool_approval(sid, "c2", approved=False, reason="no way")
    await until(lambda: idle(a, sid), timeout=2)
    fold = (await a.sessions.state(sid)).fold
    assert fold.branch()[-1].text == "outcome: not approved: no way"


async def test_a_queued_run_cancelled_on_another_replica_ends_once_and_never_runs(
    replicas: list[Replica],
) -> None:
    a, b, _ = replicas
    sid = await new_session(a, "brief")
    await a.runtime.send(sid, text("one"))
    _, doomed, _ = await b.runtime.send(sid, text("never"))
    _, kept, _ = await b.runtime.send(sid, text("three"))
    assert await b.runtime.cancel(sid, doomed) == [doomed]
    await until(lambda: idle(a, sid), timeout=5)
    evs = await events(a, sid)
    ends = [(e["run_id"], e["reason"]) for e in of_type(evs, ev.RUN_END)]
    assert (doomed, ev.CANCELLED) in ends and (kept, ev.COMPLETE) in ends
    assert len(ends) == 3
    assert doomed not in {e["run_id"] for e in of_type(evs, ev.RUN_START)}


async def test_a_replica_that_loses_its_lease_stops_and_another_continues_the_run_once(
    replicas: list[Replica], redis_server: RedisServer, prefix: str
) -> None:
    """A stalls past its lease (here: the lease is taken from it); a reaper takes over
    and continues the same run from its journal, and A writes nothing more.

    Any replica's reaper may win, A's own included, once A has let go.
    """
    a, b, c = replicas
    sid = await new_session(a, "slow")
    _, running, _ = await a.runtime.send(sid, text("go"))
    _, queued_run, _ = await b.runtime.send(sid, text("next"))

    raw = aioredis.Redis.from_url(redis_server.url())
    try:
        await raw.delete(f"{prefix}l:{lease_name(sid)}")
    finally:
        await raw.aclose()

    async def resumed() -> bool:
        return bool(of_type(await events(c, sid), ev.RUN_RESUME))

    took = await until(resumed, timeout=LEASE_TTL + 3)
    assert took < LEASE_TTL + 1
    await c.runtime.cancel(sid)
    await until(lambda: idle(c, sid), timeout=3)
    evs = await events(c, sid)
    (resume,) = of_type(evs, ev.RUN_RESUME)
    assert resume["run_id"] == running
    ends = [(e["run_id"], e["reason"]) for e in of_type(evs, ev.RUN_END)]
    assert sorted(ends) == sorted([(running, ev.CANCELLED), (queued_run, ev.CANCELLED)])
    # After the resume only the continuing replica wrote to the message: its new
    # parts are numbered after every part the stalled replica had started.
    at = evs.index(resume)
    before = {e["part_id"] for e in of_type(evs[:at], ev.PART_START)}
    last = max(int(p.rpartition(":")[2]) for p in before)
    assert [
        e for e in evs[at:]
        if e["type"] == ev.PART_DELTA and int(e["part_id"].rpartition(":")[2]) <= last
    ] == []  # fmt: skip
    assert len(of_type(evs, ev.RUN_START)) == 1  # the queued run never started


async def test_a_dead_replicas_run_is_ended_by_the_reaper_and_its_queue_goes_on(
    replicas: list[Replica],
) -> None:
    """A run record and an open run whose lease nobody holds: a replica that died."""
    a, b, _ = replicas
    sid = await new_session(a, "brief")
    await a.sessions.append(
        sid,
        [
            ev.event(ev.USER_MESSAGE, message_id="m1", parts=text("lost")),
            ev.event(ev.RUN_START, run_id="run_dead", trigger="m1", worker="gone"),
            ev.event(ev.SUBMIT, run_id="run_next", kind="message", message_id="m2",
                     parts=text("after")),
        ],
    )  # fmt: skip
    for run_id in ("run_dead", "run_next"):
        info = {"session_id": sid, "worker": "gone", "at": time.time()}
        await a.store.put_record(RUNS, run_id, orjson.dumps(info))

    await until(lambda: idle(b, sid), timeout=REAP_INTERVAL * 3 + 3)
    evs = await events(b, sid)
    assert [(e["run_id"], e["reason"]) for e in of_type(evs, ev.RUN_END)] == [
        ("run_dead", ev.INTERRUPTED),
        ("run_next", ev.COMPLETE),
    ]
    assert await b.store.list_records(RUNS) == []


async def test_deleting_a_session_on_another_replica_stops_its_run(
    replicas: list[Replica],
) -> None:
    a, b, _ = replicas
    sid = await new_session(a, "slow")
    await a.runtime.send(sid, text("go"))
    await b.runtime.send(sid, text("queued"))

    async def streaming() -> bool:
        return len(of_type(await events(b, sid), ev.PART_DELTA)) >= 3

    await until(streaming)
    await b.runtime.forget(sid)
    await b.sessions.delete(sid)

    async def stopped() -> bool:
        driver = a.runtime._drivers.find(sid)
        run = driver.run if driver is not None else None
        return run is None or run.task is None

    await until(stopped, timeout=2)

    # The reaper drops the runs' records once it sees the session is gone.
    async def forgotten() -> bool:
        return await a.store.list_records(RUNS) == []

    await until(forgotten, timeout=REAP_INTERVAL * 5 + 2)


async def plant_dead_run(replica: Replica, sid: str, run_id: str, **start: str) -> None:
    """What a replica killed mid-run leaves: an open run, its record, no lease."""
    await replica.sessions.append(
        sid,
        [
            ev.event(ev.USER_MESSAGE, message_id=f"m-{run_id}", parts=text("lost")),
            ev.event(ev.RUN_START, run_id=run_id, trigger=f"m-{run_id}", worker="gone", **start),
        ],
    )
    info = {"session_id": sid, "worker": "gone", "at": time.time()}
    await replica.store.put_record(RUNS, run_id, orjson.dumps(info))


async def test_with_retry_configured_a_dead_replicas_run_is_answered_again_once(
    replicas: list[Replica],
) -> None:
    a, _, _ = replicas
    for r in replicas:
        r.runtime.retry_lost_runs = True
    sid = await new_session(a, "brief")
    await plant_dead_run(a, sid, "run_dead")
    await until(lambda: idle(a, sid), timeout=REAP_INTERVAL * 3 + 3)
    evs = await events(a, sid)
    ends = [(e["run_id"], e["reason"]) for e in of_type(evs, ev.RUN_END)]
    assert ends[0] == ("run_dead", ev.INTERRUPTED) and ends[1][1] == ev.COMPLETE
    retry = of_type(evs, ev.RUN_START)[-1]
    assert retry["retry_of"] == "run_dead" and retry["trigger"] == "m-run_dead"
    fold = (await a.sessions.state(sid)).fold
    assert fold.branch()[-1].text == "re: lost "
    assert len(fold.children["m-run_dead"]) == 1  # the retry sits beside nothing else

    # A retry left open in its turn is only ended.
    sid2 = await new_session(a, "brief")
    await plant_dead_run(a, sid2, "run_retry", retry_of="run_first")
    await until(lambda: idle(a, sid2), timeout=REAP_INTERVAL * 3 + 3)
    ends = [(e["run_id"], e["reason"]) for e in of_type(await events(a, sid2), ev.RUN_END)]
    assert ends == [("run_retry", ev.INTERRUPTED)]
