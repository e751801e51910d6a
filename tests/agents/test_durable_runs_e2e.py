"""Runs that outlive their process: suspended, continued from their journal, never done twice.

Real ``tether serve durable_app:app`` children on one data dir (SQLite),
killed with SIGKILL or stopped with SIGTERM and started again, in front of a
local upstream that speaks OpenAI's streaming format and counts the requests
it gets. The app's tools write a line to a file each time they run, so the
tests count executions across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from helpers.session_events import Events, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from redis_server import running_redis

APPS = Path(__file__).parent / "apps"
MODEL = {"model": "openai/gpt-4o-mini"}


@dataclass
class Cluster:
    """Servers started one after another on the same data dir, and what they share."""

    tmp: Path
    fake: FakeUpstream
    tool_log: Path
    args: list[str] = field(default_factory=list)
    servers: list[TetherServer] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = server_env(self.fake)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH")) if p)
        env["TETHER_TEST_TOOL_LOG"] = str(self.tool_log)
        return env

    async def start(self, *args: str) -> TetherServer:
        server = TetherServer(
            self.tmp / "data",
            log_path=self.tmp / f"server-{len(self.servers)}.log",
            env=self.env(),
            extra_args=["durable_app:app", *self.args, *args],
        )
        self.servers.append(server)
        await asyncio.to_thread(server.start)
        return server

    def tool_runs(self) -> list[str]:
        return self.tool_log.read_text().splitlines() if self.tool_log.exists() else []


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeUpstream() as fake:
        c = Cluster(tmp_path, fake, tmp_path / "tools.log")
        try:
            yield c
        finally:
            for server in reversed(c.servers):
                await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def client(server: TetherServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as c:
        yield c


def of(kind: str, run_id: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and (run_id is None or e.get("run_id") == run_id)


async def follow(server: TetherServer, sid: str, run_id: str) -> list[dict[str, Any]]:
    """The session's whole log, read from ``server`` until the run's end."""
    async with client(server) as c:
        events = Events(c, sid)
        try:
            await events.run_end(run_id)
            return list(events.seen)
        finally:
            await events.aclose()


def email_then_done() -> list[Script]:
    return [
        Script(
            text="",
            tool_calls=[FakeToolCall("send_email", '{"to": "ada@example.com"}', id="call_email")],
        ),
        Script(text="The email is sent."),
    ]


@pytest.mark.parametrize("suspended", [True, False], ids=["suspended", "waiting"])
async def test_an_approval_posted_after_a_kill_and_restart_continues_the_same_run(
    cluster: Cluster, suspended: bool
) -> None:
    """Killed while the run waits (suspended already, or its task still alive):
    after the restart the approval, from another client, finishes the same run."""
    cluster.fake.replies.extend(email_then_done())
    cluster.args = ["--suspend-after", "0.2" if suspended else "600"]
    first = await cluster.start()
    async with client(first) as c:
        session = {**MODEL, "tools": ["send_email"]}
        sid, run_id, events = await start(c, session, {"content": "email Ada"})
        call = await events.until(lambda e: e["type"] == "part-start" and e.get("tool_call_id"))
        if suspended:
            await events.until(of("run-suspend"))
        else:  # the run's first status event says "running": wait for the pause
            await events.until(lambda e: e["type"] == "status" and e["status"] == "paused")
        await events.aclose()
    await asyncio.to_thread(first.kill)

    second = await cluster.start()
    async with client(second) as other:
        if not suspended:  # the restart continued the run, which waits again
            again = Events(other, sid)
            resume = await again.until(of("run-resume", run_id))
            await again.until(
                lambda e: e["type"] == "status" and e["status"] == "paused"
                and again.seen.index(e) > again.seen.index(resume)
            )  # fmt: skip
            await again.aclose()
        r = await other.post(
            f"/v1/sessions/{sid}/tool-approvals",
            json={"tool_call_id": call["tool_call_id"], "approved": True},
        )
        assert r.status_code == 202, r.text
    log = await follow(second, sid, run_id)

    ends = [(e["run_id"], e["reason"]) for e in log if e["type"] == "run-end"]
    assert ends == [(run_id, "complete")]
    assert [e["run_id"] for e in log if e["type"] == "run-start"] == [run_id]
    assert any(e["type"] == "run-resume" and e["run_id"] == run_id for e in log)
    assert cluster.tool_runs() == ["send_email ada@example.com"]
    # The first model call was not asked again: one request per step.
    assert len(cluster.fake.requests) == 2
    tool_reply = cluster.fake.requests[1].body["messages"][-1]
    assert tool_reply["role"] == "tool" and "sent to ada@example.com" in tool_reply["content"]
    async with client(second) as c:
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
    assert snap["status"] == "idle" and snap["messages"][-1]["status"] == "complete"
    assert "The email is sent." in snap["messages"][-1]["parts"][-1]["text"]


async def test_a_run_killed_in_its_fourth_model_call_continues_without_redoing_the_first_three(
    cluster: Cluster,
) -> None:
    fake = cluster.fake
    fake.replies.extend(
        Script(text="", tool_calls=[FakeToolCall("note", f'{{"n": {n}}}', id=f"call_note_{n}")])
        for n in (1, 2, 3)
    )
    fake.replies.append(Script(text="Almost done with all the notes", hang_after=2))  # stalls
    fake.replies.append(Script(text="Noted all three."))
    first = await cluster.start()
    async with client(first) as c:
        sid, run_id, events = await start(c, {**MODEL, "tools": ["note"]}, {"content": "go"})
        await events.until(lambda e: e.get("tool_call_id") == "call_note_3" and "output" in e)
        await events.until(lambda e: e["type"] == "part-start" and e["kind"] == "text")
        await events.aclose()
    assert len(fake.requests) == 4
    await asyncio.to_thread(first.kill)
    assert cluster.tool_runs() == ["note 1", "note 2", "note 3"]

    second = await cluster.start()
    log = await follow(second, sid, run_id)
    assert [(e["run_id"], e["reason"]) for e in log if e["type"] == "run-end"] == [
        (run_id, "complete")
    ]
    assert cluster.tool_runs() == ["note 1", "note 2", "note 3"]  # none ran again
    assert len(fake.requests) == 5  # the fourth call, retried; the first three not again
    assert fake.requests[4].body["messages"] == fake.requests[3].body["messages"]
    resume = next(e for e in log if e["type"] == "run-resume")
    assert resume["replayed"] == 3
    async with client(second) as c:
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
    answer = snap["messages"][-1]
    assert answer["status"] == "complete"
    texts = [p["text"] for p in answer["parts"] if p["kind"] == "text"]
    assert texts == ["Noted all three."]  # what the cut call streamed is discarded
    calls = [p for p in answer["parts"] if p["kind"] == "tool-call"]
    assert [p["result"] for p in calls] == ["noted 1", "noted 2", "noted 3"]


async def test_sigterm_mid_answer_exits_within_the_grace_and_the_restart_finishes_it(
    cluster: Cluster,
) -> None:
    cluster.args = ["--shutdown-grace", "1"]
    first = await cluster.start()
    async with client(first) as c:
        sid, run_id, events = await start(c, {"model": "demo"}, {"content": "/count 500 20"})
        await events.until(lambda e: e["type"] == "part-delta" and e["delta"].strip() == "20")
        await events.aclose()
    asked = time.monotonic()
    code = await asyncio.to_thread(first.terminate, 10)
    took = time.monotonic() - asked
    assert code in (0, -signal.SIGTERM), first.output()  # uvicorn re-raises the signal
    assert took < 1 + 1, f"the server took {took:.2f}s to stop with a 1 s grace"
    assert "continues from its journal" in first.output()

    second = await cluster.start()
    log = await follow(second, sid, run_id)
    assert [e["reason"] for e in log if e["type"] == "run-end"] == ["complete"]
    async with client(second) as c:
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
    assert snap["messages"][-1]["parts"][-1]["text"] == " ".join(str(i) for i in range(1, 501))


async def test_sigterm_lets_a_model_call_finish_within_the_grace(cluster: Cluster) -> None:
    """With the default 10 s grace, an answer due in 2 s ends before the process exits."""
    first = await cluster.start()
    async with client(first) as c:
        sid, run_id, events = await start(c, {"model": "demo"}, {"content": "/count 100 20"})
        await events.until(lambda e: e["type"] == "part-delta" and e["delta"].strip() == "10")
        await events.aclose()
    asked = time.monotonic()
    code = await asyncio.to_thread(first.terminate, 10)
    assert code in (0, -signal.SIGTERM) and time.monotonic() - asked < 5, first.output()
    second = await cluster.start()
    log = await follow(second, sid, run_id)
    assert [e["reason"] for e in log if e["type"] == "run-end"] == ["complete"]
    assert not [e for e in log if e["type"] == "run-resume"]  # it ended in the first process
    async with client(second) as c:
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
    assert snap["messages"][-1]["parts"][-1]["text"] == " ".join(str(i) for i in range(1, 101))


async def test_a_replay_that_diverges_fails_the_run_with_the_documented_error(
    cluster: Cluster,
) -> None:
    cluster.args = ["--suspend-after", "0.1"]
    first = await cluster.start()
    async with client(first) as c:
        sid, run_id, events = await start(c, {"agent": "diverging"}, {"content": "go"})
        call = await events.until(lambda e: e["type"] == "part-start" and e.get("tool_call_id"))
        await events.until(of("run-suspend", run_id))
        await events.aclose()
    await asyncio.to_thread(first.kill)

    second = await cluster.start()
    async with client(second) as c:
        r = await c.post(
            f"/v1/sessions/{sid}/tool-results",
            json={"tool_call_id": call["tool_call_id"], "output": "yes"},
        )
        assert r.status_code == 202, r.text
    log = await follow(second, sid, run_id)
    (error,) = [e for e in log if e["type"] == "error"]
    assert error["code"] == "replay_diverged"
    assert "deterministic" in error["message"] and "through ctx" in error["message"]
    assert [e["reason"] for e in log if e["type"] == "run-end"] == ["error"]
    assert len(cluster.fake.requests) == 1  # the diverging call was refused, not sent


async def test_a_ctx_step_runs_once_across_a_restart(cluster: Cluster) -> None:
    cluster.args = ["--suspend-after", "0.1"]
    first = await cluster.start()
    async with client(first) as c:
        sid, run_id, events = await start(c, {"agent": "stepper"}, {"content": "go"})
        call = await events.until(lambda e: e["type"] == "part-start" and e.get("tool_call_id"))
        await events.until(of("run-suspend", run_id))
        await events.aclose()
    await asyncio.to_thread(first.kill)
    second = await cluster.start()
    async with client(second) as c:
        r = await c.post(
            f"/v1/sessions/{sid}/tool-results",
            json={"tool_call_id": call["tool_call_id"], "output": "ok"},
        )
        assert r.status_code == 202, r.text
    await follow(second, sid, run_id)
    assert cluster.tool_runs() == [f"stamp {run_id}"]
    async with client(second) as c:
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
    assert snap["messages"][-1]["parts"][-1]["text"] == f"stamp-{first.pid} ok"


async def test_a_suspended_run_holds_no_task_and_a_second_answer_gets_409(
    cluster: Cluster,
) -> None:
    cluster.fake.replies.extend(email_then_done())
    cluster.args = ["--suspend-after", "0.1"]
    server = await cluster.start()
    async with client(server) as c:
        sid, run_id, events = await start(
            c, {**MODEL, "tools": ["send_email"]}, {"content": "email Ada"}
        )
        call = await events.until(lambda e: e["type"] == "part-start" and e.get("tool_call_id"))
        suspend = await events.until(of("run-suspend", run_id))
        assert suspend["waiting"] == [{"tool_call_id": call["tool_call_id"], "for": "approval"}]
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
        assert snap["status"] == "paused"
        assert snap["active_run"]["suspended"] == suspend["waiting"]
        answers = await asyncio.gather(
            *(
                c.post(
                    f"/v1/sessions/{sid}/tool-approvals",
                    json={"tool_call_id": call["tool_call_id"], "approved": True},
                )
                for _ in range(8)
            )
        )
        assert sorted(r.status_code for r in answers) == [202] + [409] * 7
        await events.run_end(run_id)
        await events.aclose()
    assert cluster.tool_runs() == ["send_email ada@example.com"]


async def test_a_wait_that_expires_ends_the_run_with_a_clear_error(cluster: Cluster) -> None:
    cluster.fake.replies.extend(email_then_done())
    cluster.args = ["--suspend-after", "0.1", "--wait-expiry", "1"]
    server = await cluster.start()
    async with client(server) as c:
        _, run_id, events = await start(
            c, {**MODEL, "tools": ["send_email"]}, {"content": "email Ada"}
        )
        suspend = await events.until(of("run-suspend", run_id))
        assert suspend["waiting"][0]["expires_at"] > time.time()
        end = await events.run_end(run_id)
        error = await events.until(of("error", run_id))
        await events.aclose()
    assert end["reason"] == "error"
    assert error["code"] == "wait_expired" and "approval" in error["message"]
    assert cluster.tool_runs() == []


async def test_cancelling_a_suspended_run_ends_it_cancelled(cluster: Cluster) -> None:
    cluster.fake.replies.extend(email_then_done())
    cluster.args = ["--suspend-after", "0.1"]
    server = await cluster.start()
    async with client(server) as c:
        sid, run_id, events = await start(
            c, {**MODEL, "tools": ["send_email"]}, {"content": "email Ada"}
        )
        await events.until(of("run-suspend", run_id))
        r = await c.post(f"/v1/sessions/{sid}/cancel", json={})
        assert r.status_code == 202 and r.json()["cancelled"] == [run_id]
        end = await events.run_end(run_id)
        await events.aclose()
    assert end["reason"] == "cancelled"
    assert cluster.tool_runs() == []


@pytest.mark.parametrize("retry", [False, True], ids=["ended", "answered-again"])
async def test_an_agent_that_opts_out_of_replay_is_ended_interrupted_or_answered_again(
    cluster: Cluster, retry: bool
) -> None:
    cluster.args = ["--retry-lost-runs"] if retry else []
    first = await cluster.start()
    async with client(first) as c:
        sid, run_id, events = await start(c, {"agent": "fragile"}, {"content": "count"})
        await events.until(lambda e: e["type"] == "part-delta" and e["delta"] == "5 ")
        await events.aclose()
    await asyncio.to_thread(first.kill)

    second = await cluster.start()
    async with client(second) as c:
        events = Events(c, sid)
        if retry:
            end = await events.until(lambda e: e["type"] == "run-end" and e["run_id"] != run_id)
        else:
            end = await events.run_end(run_id)
        log = list(events.seen)
        await events.aclose()
    ends = [(e["run_id"], e["reason"]) for e in log if e["type"] == "run-end"]
    assert not [e for e in log if e["type"] == "run-resume"]
    if not retry:
        assert ends == [(run_id, "interrupted")]
        return
    assert ends == [(run_id, "interrupted"), (end["run_id"], "complete")]
    again = [e for e in log if e["type"] == "run-start"][-1]
    assert again["retry_of"] == run_id and again["run_id"] == end["run_id"]


# -- replicas on one Redis --------------------------------------------------------


@pytest.fixture
async def replicas(tmp_path: Path, cluster: Cluster) -> AsyncIterator[list[TetherServer]]:
    """Two replicas of durable_app on one real Redis; runs suspend after 0.1 s."""
    with running_redis(tmp_path / "redis") as redis:
        store = f"{redis.url()}?prefix=durable-{uuid.uuid4().hex[:8]}:"
        servers = [
            TetherServer(
                tmp_path / f"replica-{i}",
                store=store,
                log_path=tmp_path / f"replica-{i}.log",
                env=cluster.env(),
                extra_args=["durable_app:app", "--lease-ttl", "2", "--suspend-after", "0.1"],
            )
            for i in range(2)
        ]
        for server in servers:
            await asyncio.to_thread(server.start)
        try:
            yield servers
        finally:
            for server in servers:
                await asyncio.to_thread(server.stop)


async def test_a_suspended_run_of_a_killed_replica_is_finished_by_the_one_the_approval_reaches(
    cluster: Cluster, replicas: list[TetherServer]
) -> None:
    a, b = replicas
    cluster.fake.replies.extend(email_then_done())
    async with client(a) as c:
        sid, run_id, events = await start(
            c, {**MODEL, "tools": ["send_email"]}, {"content": "email Ada"}
        )
        call = await events.until(lambda e: e["type"] == "part-start" and e.get("tool_call_id"))
        await events.until(of("run-suspend", run_id))
        await events.aclose()
    await asyncio.to_thread(a.kill)
    async with client(b) as c:
        r = await c.post(
            f"/v1/sessions/{sid}/tool-approvals",
            json={"tool_call_id": call["tool_call_id"], "approved": True},
        )
        assert r.status_code == 202, r.text
    log = await follow(b, sid, run_id)
    assert [(e["run_id"], e["reason"]) for e in log if e["type"] == "run-end"] == [
        (run_id, "complete")
    ]
    (resume,) = [e for e in log if e["type"] == "run-resume"]
    assert int(resume["worker"].split(":")[-2]) == b.pid
    assert cluster.tool_runs() == ["send_email ada@example.com"]
    assert len(cluster.fake.requests) == 2


async def test_answers_racing_on_two_replicas_are_taken_once_and_the_tool_runs_once(
    cluster: Cluster, replicas: list[TetherServer]
) -> None:
    rounds, per_replica = 5, 8
    for _ in range(rounds):
        cluster.fake.replies.extend(email_then_done())
    async with client(replicas[0]) as c0, client(replicas[1]) as c1:
        for n in range(rounds):
            sid, run_id, events = await start(
                c0, {**MODEL, "tools": ["send_email"]}, {"content": f"email Ada, round {n}"}
            )
            call = await events.until(lambda e: e["type"] == "part-start" and e.get("tool_call_id"))
            if n % 2:  # odd rounds: the run is suspended, not waiting in a task
                await events.until(of("run-suspend", run_id))
            body = {"tool_call_id": call["tool_call_id"], "approved": True}
            answers = await asyncio.gather(
                *(
                    c.post(f"/v1/sessions/{sid}/tool-approvals", json=body)
                    for _ in range(per_replica)
                    for c in (c0, c1)
                )
            )
            codes = sorted(r.status_code for r in answers)
            assert codes == [202] + [409] * (2 * per_replica - 1), [r.text for r in answers]
            end = await events.run_end(run_id)
            assert end["reason"] == "complete"
            approvals = [e for e in events.seen if e["type"] == "tool-approval"]
            assert len(approvals) == 1
            await events.aclose()
    assert cluster.tool_runs() == ["send_email ada@example.com"] * rounds
