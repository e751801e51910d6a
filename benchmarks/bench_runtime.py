"""Runtime cost: sessions streaming at once; a tool loop; the journal; suspended runs.

Starts `tether serve benchmarks.runtime_agents:app` (SQLite store), opens one
SSE reader per session on the native event stream, starts a run in every
session (each streams TOKENS tokens at RATE tokens/s) and records, for every
token, the time from the agent yielding it to the reader receiving it. Then
measures the server's memory per idle session.

The tool loop: a fresh `tether serve benchmarks.tool_agents:app` (SQLite
store) in front of `benchmarks/upstream.py`, which answers a request offering
tools with a tool call 9 times and then with text, so a loop is 10 model calls.
Each round runs one loop of each kind, each in a fresh session, in rotating
order: (1) a model session that declares one client tool, whose result the
client posts as soon as it sees the call complete on the session's event
stream: the whole path of a client tool step (the streamed call relayed into
the log and out to the client, the result taken in, the next request sent),
with the client's own SSE parsing and POST on it too; (2) the agent
`tool_agents:tool_loop`, the model agent's loop through `ctx.model()` with
each call answered in the server as a server tool's outcome is recorded
(tether's own cost per step, no client in the loop; it stands in for an
`@app.tool` until apps can register one); (3) the same 10 upstream calls made
directly by a plain client (the floor). tether's added time per step is
(loop - the round's direct loop) / 10.

Model streaming (the path the run journal is on: a model call's output is
gathered as it streams and journaled when it ends; the ticker writes with
ctx.text and never journals): a fresh tether in front of the upstream, which
streams TOKENS content chunks 1/RATE s apart, each carrying its send time
(CLOCK_MONOTONIC, which the client shares). SESSIONS model sessions
(``openai/bench-model``), one SSE reader each; in each of MODEL_ROUNDS rounds
every session answers one message at once. Reports the server's CPU seconds
per round and per token, and each token's upstream send -> SSE receipt. Run
alternately against the commit before the journal: the CPU ratio is its cost.

Suspended runs: a fresh tether (`--suspend-after 0`, no upstream). SUSPENDED
demo sessions run one short answer (the baseline, as ``idle`` measures), then
SUSPENDED demo sessions declaring a client tool are sent ``/tool ask``: each
run calls it and is suspended at once (polled until the snapshot says
``paused`` with ``active_run.suspended``). Reports the server's RSS growth
per session of each kind, its CPU over QUIET_S seconds after each phase (a
suspended run holds no task: it must cost none), and, for RESUMES of them
answered one at a time, answer POST -> ``run-resume`` and -> ``run-end``
(the demo model's short reply after the tool result included).

    .venv/bin/python benchmarks/bench_runtime.py [--sessions 100] [--rate 50] [--tokens 250]
        [--scenarios streaming,idle,tool-loop,model-streaming,suspended] [--tool-loops 200]
        [--model-rounds 3] [--suspended 10000] [--resumes 100] [--quiet-s 10]
    # an older commit: its src/ first on PYTHONPATH (tool-loop needs issue 18's ctx.model(),
    # suspended issue 19's --suspend-after)
    PYTHONPATH=<old>/src .venv/bin/python benchmarks/bench_runtime.py --scenarios streaming,idle
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import harness


async def reader(
    http: aiohttp.ClientSession,
    url: str,
    tokens: int,
    out: list[tuple[int, float]],
    ready: asyncio.Event,
) -> None:
    got = 0
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
        ready.set()
        async for raw in r.content:
            if not raw.startswith(b"data: "):
                continue
            now = time.time_ns()
            ev = json.loads(raw[6:])
            if ev["type"] == "part-delta":
                out.append((got, (now - int(ev["delta"])) / 1e6))
                got += 1
                if got == tokens:
                    return


async def streaming(base: str, sessions: int, rate: float, tokens: int) -> list[tuple[int, float]]:
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        ids = []
        for _ in range(sessions):
            async with http.post(base + "/v1/sessions", json={"agent": "ticker"}) as r:
                ids.append((await r.json())["id"])
        latencies: list[tuple[int, float]] = []
        readies = [asyncio.Event() for _ in ids]
        tasks = [
            asyncio.create_task(
                reader(http, f"{base}/v1/sessions/{sid}/events?offset=now", tokens, latencies, ev)
            )
            for sid, ev in zip(ids, readies, strict=True)
        ]
        await asyncio.gather(*(e.wait() for e in readies))
        for sid in ids:
            async with http.post(
                f"{base}/v1/sessions/{sid}/messages", json={"content": f"{tokens} {rate}"}
            ) as r:
                assert r.status == 202, await r.text()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=tokens / rate + 60)
        assert len(latencies) == sessions * tokens, (len(latencies), sessions * tokens)
        return latencies


async def idle_memory(base: str, pids: list[int], sessions: int) -> float:
    conn = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.sleep(1)
        before = harness.rss_kib(pids)

        async def one() -> None:
            async with http.post(base + "/v1/sessions", json={"agent": "ticker"}) as r:
                sid = (await r.json())["id"]
            async with http.post(
                f"{base}/v1/sessions/{sid}/messages", json={"content": "3 1000"}
            ) as r:
                assert r.status == 202
            async with http.get(f"{base}/v1/sessions/{sid}") as r:
                await r.read()

        for start in range(0, sessions, 50):
            await asyncio.gather(*(one() for _ in range(min(50, sessions - start))))
        await asyncio.sleep(2)
        return (harness.rss_kib(pids) - before) / sessions


#: Model calls in one tool loop: the upstream answers all but the last with a tool call.
STEPS = 10
MODEL = "bench-model"
LOOKUP = {
    "name": "lookup",
    "description": "Look a step up (answered at once).",
    "parameters": {
        "type": "object",
        "properties": {"step": {"type": "integer"}, "arrived_ns": {"type": "integer"}},
    },
}
SCENARIOS = ("streaming", "idle", "tool-loop", "model-streaming", "suspended")


#: How a loop's tool calls are answered: by the benchmark's client (a client tool
#: of a model session), or in the server (``tool_agents.tool_loop``).
WAYS = ("client-tool", "in-server")


@dataclass
class TetherLoop:
    """One loop through tether, in seconds (time.monotonic, the upstream's clock too)."""

    total: float = 0.0
    #: Message posted -> the upstream received the first model request.
    start: float = 0.0
    #: Per call: the upstream received the request -> the client saw the call complete.
    out: list[float] = field(default_factory=list)
    #: Client tool, per call but the last: result posted -> the upstream got the next request.
    back: list[float] = field(default_factory=list)
    #: Client tool, per call: the result's POST round trip (sent -> 202 read).
    post: list[float] = field(default_factory=list)
    #: Events in the session's stream up to the run's end (the session's own first).
    events: int = 0
    #: CPU time over the loop (clock ticks: meaningful summed over many loops).
    tether_cpu_s: float = 0.0
    client_cpu_s: float = 0.0


async def tether_loop(
    http: aiohttp.ClientSession, server: harness.ServerProcess, way: str
) -> TetherLoop:
    """One session's tool loop, from its message to its run's end."""
    if way == "client-tool":
        session: dict[str, Any] = {"model": f"openai/{MODEL}", "tools": [LOOKUP]}
    else:
        session = {"agent": "tool_loop", "tools": [LOOKUP]}
    async with http.post(server.base_url + "/v1/sessions", json=session) as r:
        assert r.status == 201, await r.text()
        sid = (await r.json())["id"]
    loop = TetherLoop()
    calls: dict[str, str] = {}  # part id -> tool call id
    url = f"{server.base_url}/v1/sessions/{sid}"
    async with http.get(url + "/events?offset=-1", timeout=aiohttp.ClientTimeout(60)) as events:
        cpu, client_cpu = harness.cpu_seconds(server.pids), harness.self_cpu_seconds()
        began = time.monotonic()
        async with http.post(url + "/messages", json={"content": "go"}) as r:
            assert r.status == 202, await r.text()
        posted = 0.0
        async for raw in events.content:
            if not raw.startswith(b"data: "):
                continue
            ev = json.loads(raw[6:])
            loop.events += 1
            if ev["type"] == "part-start" and ev["kind"] == "tool-call":
                calls[ev["part_id"]] = ev["tool_call_id"]
            elif ev["type"] == "part-end" and ev["part_id"] in calls:
                seen = time.monotonic()
                arrived = ev["value"]["arrived_ns"] / 1e9
                if not loop.out:
                    loop.start = arrived - began
                elif way == "client-tool":
                    loop.back.append(arrived - posted)
                loop.out.append(seen - arrived)
                if way == "client-tool":
                    posted = time.monotonic()
                    result = {"tool_call_id": calls[ev["part_id"]], "output": "ok"}
                    async with http.post(url + "/tool-results", json=result) as r:
                        assert r.status == 202, await r.text()
                    loop.post.append(time.monotonic() - posted)
            elif ev["type"] == "run-end":
                loop.total = time.monotonic() - began
                assert ev["reason"] == "complete", ev
                break
        loop.tether_cpu_s = harness.cpu_seconds(server.pids) - cpu
        loop.client_cpu_s = harness.self_cpu_seconds() - client_cpu
    assert len(loop.out) == STEPS - 1, loop
    return loop


@dataclass
class DirectLoop:
    #: Each model call's seconds, request sent -> answer read.
    steps: list[float]
    client_cpu_s: float


async def direct_loop(http: aiohttp.ClientSession, upstream: str) -> DirectLoop:
    """The same model calls made straight to the upstream."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    request = {
        "model": MODEL,
        "tools": [{"type": "function", "function": LOOKUP}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    steps: list[float] = []
    client_cpu = harness.self_cpu_seconds()
    while len(steps) < STEPS:
        began = time.monotonic()
        call: dict[str, Any] | None = None
        async with http.post(
            upstream + "/v1/chat/completions", json={**request, "messages": messages}
        ) as r:
            assert r.status == 200, await r.text()
            async for raw in r.content:  # to the end of the body: the connection is kept
                if not raw.startswith(b"data: {"):
                    continue
                for choice in json.loads(raw[6:])["choices"]:
                    for piece in choice["delta"].get("tool_calls") or ():
                        if call is None:
                            call = {"id": piece["id"], "type": "function",
                                    "function": {"name": piece["function"]["name"],
                                                 "arguments": ""}}  # fmt: skip
                        call["function"]["arguments"] += piece["function"].get("arguments", "")
        steps.append(time.monotonic() - began)
        if call is None:
            break
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": "ok"})
    assert len(steps) == STEPS and call is None, steps
    return DirectLoop(steps, harness.self_cpu_seconds() - client_cpu)


@dataclass
class ToolLoops:
    through: dict[str, list[TetherLoop]]
    direct: list[DirectLoop]
    machine: harness.MachineCpu


async def tool_loops(
    server: harness.ServerProcess, upstream: str, rounds: int, warmup: int
) -> ToolLoops:
    """``warmup`` then ``rounds`` rounds of one loop each way and one direct, order rotating."""
    out = ToolLoops({way: [] for way in WAYS}, [], harness.MachineCpu(0.0, 0.0, 0.0))
    kinds = [*WAYS, "direct"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for i in range(warmup + rounds):
            if i == warmup:
                machine = harness.machine_cpu()
            for kind in kinds[i % 3 :] + kinds[: i % 3]:
                if kind == "direct":
                    direct = await direct_loop(http, upstream)
                    if i >= warmup:
                        out.direct.append(direct)
                else:
                    through = await tether_loop(http, server, kind)
                    if i >= warmup:
                        out.through[kind].append(through)
    out.machine = harness.machine_cpu().since(machine)
    return out


def tether_process(
    tmp: Path, name: str, serve_args: list[str], env: dict[str, str] | None = None
) -> harness.ServerProcess:
    """A ``tether serve`` child on the SQLite store in a data directory of its own."""
    port = harness.free_port()
    data = tmp / f"{name}-data"
    data.mkdir()
    return harness.ServerProcess(
        "tether",
        [
            str(Path(sys.executable).parent / "tether"), "serve", "--port", str(port),
            "--data-dir", str(data), "--log-level", "warning", *serve_args,
        ],
        port,
        tmp,
        env={"PYTHONPATH": agents_path(), **(env or {})},
        log_name=f"{name}-server.log",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def model_servers(
    tmp: Path, upstream_args: list[str], name: str
) -> AsyncIterator[tuple[harness.ServerProcess, str]]:
    """``benchmarks/upstream.py`` and a tether in front of it, both stopped after."""
    up_port = harness.free_port()
    upstream = harness.ServerProcess(
        "upstream",
        [
            sys.executable, str(harness.REPO_ROOT / "benchmarks" / "upstream.py"),
            "--port", str(up_port), "--model", MODEL, "--exit-on-stdin-close", *upstream_args,
        ],
        up_port,
        tmp,
        log_name=f"{name}-upstream.log",
        health_path="/health",
    )  # fmt: skip
    server = tether_process(
        tmp,
        name,
        ["benchmarks.tool_agents:app"],
        {
            "TETHER_OPENAI_BASE_URL": f"{upstream.base_url}/v1",
            "TETHER_OPENAI_API_KEY": "bench-key",
            "TETHER_OPENAI_MODELS": MODEL,
        },
    )
    upstream.start()
    try:
        await upstream.wait_ready(30.0)
        server.start()
        try:
            await server.wait_ready(30.0)
            yield server, upstream.base_url
        finally:
            server.stop()
    finally:
        upstream.stop()


async def run_tool_loops(args: argparse.Namespace, tmp: Path) -> ToolLoops:
    """Start the upstream and a tether in front of it; measure; stop both."""
    pacing = [
        "--tokens", str(args.tool_tokens), "--ttft-ms", str(args.tool_ttft_ms),
        "--gap-ms", str(args.tool_gap_ms), "--tool-steps", str(STEPS - 1),
    ]  # fmt: skip
    async with model_servers(tmp, pacing, "tool-loop") as (server, upstream):
        return await tool_loops(server, upstream, args.tool_loops, args.tool_warmup)


# --------------------------------------------------------------------------- model streaming

#: The upstream's send time in each content chunk (`` t{i}@{CLOCK_MONOTONIC ns}``).
SENT_AT = re.compile(r"@(\d+)")


@dataclass
class ModelStreaming:
    #: Per round: the server's CPU seconds from the first message to the last run-end.
    cpu_s: list[float]
    #: Per token: upstream send -> SSE receipt (ms), all rounds.
    latency_ms: list[float]
    tokens: int
    machine: harness.MachineCpu


async def model_reader(
    http: aiohttp.ClientSession,
    url: str,
    latency_ms: list[float],
    ends: asyncio.Queue[str],
    ready: asyncio.Event,
) -> None:
    """Read a session's events for good: every token's delay, each run's end reason."""
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
        ready.set()
        async for raw in r.content:
            if not raw.startswith(b"data: "):
                continue
            now = time.monotonic_ns()
            ev = json.loads(raw[6:])
            if ev["type"] == "part-delta":
                latency_ms.extend((now - int(sent)) / 1e6 for sent in SENT_AT.findall(ev["delta"]))
            elif ev["type"] == "run-end":
                await ends.put(ev["reason"])


async def model_streaming(
    server: harness.ServerProcess, sessions: int, tokens: int, rate: float, rounds: int
) -> ModelStreaming:
    """``rounds`` times: every session answers one message at once, through the upstream."""
    out = ModelStreaming([], [], 0, harness.MachineCpu(0.0, 0.0, 0.0))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        ids = []
        for _ in range(sessions):
            session = {"model": f"openai/{MODEL}"}
            async with http.post(server.base_url + "/v1/sessions", json=session) as r:
                assert r.status == 201, await r.text()
                ids.append((await r.json())["id"])
        ends: list[asyncio.Queue[str]] = [asyncio.Queue() for _ in ids]
        readies = [asyncio.Event() for _ in ids]
        readers = [
            asyncio.create_task(
                model_reader(
                    http, f"{server.base_url}/v1/sessions/{sid}/events?offset=now",
                    out.latency_ms, q, ready,
                )
            )
            for sid, q, ready in zip(ids, ends, readies, strict=True)
        ]  # fmt: skip
        try:
            await asyncio.gather(*(e.wait() for e in readies))
            machine = harness.machine_cpu()
            for _ in range(rounds):
                cpu = harness.cpu_seconds(server.pids)
                for sid in ids:
                    url = f"{server.base_url}/v1/sessions/{sid}/messages"
                    async with http.post(url, json={"content": "go"}) as r:
                        assert r.status == 202, await r.text()
                reasons = await asyncio.wait_for(
                    asyncio.gather(*(q.get() for q in ends)), timeout=tokens / rate + 60
                )
                out.cpu_s.append(harness.cpu_seconds(server.pids) - cpu)
                assert set(reasons) == {"complete"}, reasons
            out.machine = harness.machine_cpu().since(machine)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    out.tokens = sessions * tokens * rounds
    assert len(out.latency_ms) == out.tokens, (len(out.latency_ms), out.tokens)
    return out


async def run_model_streaming(args: argparse.Namespace, tmp: Path) -> ModelStreaming:
    pacing = ["--tokens", str(args.tokens), "--ttft-ms", str(1000 / args.rate),
              "--gap-ms", str(1000 / args.rate)]  # fmt: skip
    async with model_servers(tmp, pacing, "model-streaming") as (server, _):
        return await model_streaming(
            server, args.sessions, args.tokens, args.rate, args.model_rounds
        )


def report_model_streaming(args: argparse.Namespace, r: ModelStreaming) -> None:
    print(
        f"model streaming: {args.sessions} sessions on openai/{MODEL} (benchmarks/upstream.py: "
        f"{args.tokens} chunks {1000 / args.rate:g} ms apart), {args.model_rounds} round(s) "
        f"of one answer in every session at once ({r.tokens} tokens)"
    )
    rounds = ", ".join(f"{c:.2f}" for c in r.cpu_s)
    print(
        f"  server CPU per round: {rounds} s (median {statistics.median(r.cpu_s):.2f} s); "
        f"per token {sum(r.cpu_s) / r.tokens * 1e6:.1f} us"
    )
    lat = r.latency_ms
    print(
        f"  token upstream send -> SSE receipt: p50 {statistics.median(lat):.2f} ms, "
        f"p99 {harness.percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms"
    )
    m = r.machine
    print(
        f"  machine meanwhile: {100 * m.busy / m.total:.0f}% busy, "
        f"{100 * m.steal / m.total:.1f}% steal"
    )


# --------------------------------------------------------------------------- suspended runs

#: The client tool the demo model calls (``/tool ask``), declared on every session.
ASK = {"name": "ask", "description": "Ask the person.", "parameters": {"type": "object"}}


@dataclass
class Suspended:
    sessions: int
    #: Server RSS (KiB): at start, after the idle sessions, after the suspended runs.
    rss_kib: tuple[int, int, int]
    #: Server CPU seconds over the quiet window after each phase.
    quiet_cpu_s: tuple[float, float]
    #: Per answered run (s): answer POSTed -> run-resume, -> run-end.
    resume_s: list[float]
    end_s: list[float]


async def settled(
    http: aiohttp.ClientSession, base: str, message: str, done: Any, concurrency: int, n: int
) -> list[dict[str, Any]]:
    """``n`` demo sessions sent ``message``, each polled until ``done(snapshot)``."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> dict[str, Any]:
        async with gate:
            session = {"model": "demo", "tools": [ASK]}
            async with http.post(base + "/v1/sessions", json=session) as r:
                assert r.status == 201, await r.text()
                sid = (await r.json())["id"]
            url = f"{base}/v1/sessions/{sid}"
            async with http.post(url + "/messages", json={"content": message}) as r:
                assert r.status == 202, await r.text()
            for _ in range(600):
                async with http.get(url) as r:
                    snapshot: dict[str, Any] = await r.json()
                if done(snapshot):
                    return snapshot
                await asyncio.sleep(0.05)
            raise harness.BenchError(f"session {sid} never settled: {snapshot}")

    return list(await asyncio.gather(*(one() for _ in range(n))))


def is_suspended(snapshot: dict[str, Any]) -> bool:
    active = snapshot.get("active_run")
    return snapshot.get("status") == "paused" and bool(active and active.get("suspended"))


async def resume(
    http: aiohttp.ClientSession, base: str, snapshot: dict[str, Any]
) -> tuple[float, float]:
    """Answer a suspended run's call; seconds from the POST to its run-resume and run-end."""
    url = f"{base}/v1/sessions/{snapshot['id']}"
    call_id = snapshot["active_run"]["suspended"][0]["tool_call_id"]
    resumed = math.nan
    async with http.get(url + "/events?offset=now", timeout=aiohttp.ClientTimeout(60)) as events:
        began = time.monotonic()
        result = {"tool_call_id": call_id, "output": "ok"}
        async with http.post(url + "/tool-results", json=result) as r:
            assert r.status == 202, await r.text()
        async for raw in events.content:
            if not raw.startswith(b"data: "):
                continue
            ev = json.loads(raw[6:])
            if ev["type"] == "run-resume":
                resumed = time.monotonic() - began
            elif ev["type"] == "run-end":
                assert ev["reason"] == "complete", ev
                return resumed, time.monotonic() - began
    raise harness.BenchError(f"no run-end in {url}")


async def suspended_runs(
    server: harness.ServerProcess, n: int, resumes: int, quiet_s: float
) -> Suspended:
    base = server.base_url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as http:
        await asyncio.sleep(1)
        rss0 = harness.rss_kib(server.pids)
        await settled(http, base, "hi", lambda s: s["active_run"] is None, 50, n)
        await asyncio.sleep(2)
        rss1 = harness.rss_kib(server.pids)
        cpu = harness.cpu_seconds(server.pids)
        await asyncio.sleep(quiet_s)
        quiet_idle = harness.cpu_seconds(server.pids) - cpu
        waiting = await settled(http, base, "/tool ask", is_suspended, 50, n)
        await asyncio.sleep(2)
        rss2 = harness.rss_kib(server.pids)
        cpu = harness.cpu_seconds(server.pids)
        await asyncio.sleep(quiet_s)
        quiet_suspended = harness.cpu_seconds(server.pids) - cpu
        answered = [await resume(http, base, s) for s in waiting[:resumes]]
    return Suspended(
        n,
        (rss0, rss1, rss2),
        (quiet_idle, quiet_suspended),
        [a for a, _ in answered],
        [b for _, b in answered],
    )


async def run_suspended(args: argparse.Namespace, tmp: Path) -> Suspended:
    server = tether_process(tmp, "suspended", ["--suspend-after", "0"])
    server.start()
    try:
        await server.wait_ready(30.0)
        return await suspended_runs(server, args.suspended, args.resumes, args.quiet_s)
    finally:
        server.stop()


def report_suspended(args: argparse.Namespace, r: Suspended) -> None:
    rss0, rss1, rss2 = r.rss_kib
    idle, suspended = (rss1 - rss0) / r.sessions, (rss2 - rss1) / r.sessions
    print(
        f"suspended runs: {r.sessions} demo sessions that ran one short answer, then "
        f"{r.sessions} whose run waits on a client tool (--suspend-after 0)"
    )
    print(
        f"  server RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} -> {rss2 / 1024:.0f} MiB: "
        f"per idle session {idle:.1f} KiB, per session with a suspended run {suspended:.1f} KiB"
        f" ({suspended - idle:+.1f} KiB)"
    )
    quiet_idle, quiet_suspended = r.quiet_cpu_s
    print(
        f"  server CPU over {args.quiet_s:g} s: {quiet_idle:.2f} s with the idle sessions, "
        f"{quiet_suspended:.2f} s with the suspended runs too"
    )
    print(
        f"  {len(r.end_s)} answered one at a time: answer POST -> run-resume "
        f"{p50_p99(r.resume_s)}; -> run-end {p50_p99(r.end_s)}"
    )


def p50_p99(values: list[float]) -> str:
    """The median and p99 of ``values`` (seconds), in ms, for the report."""
    return (
        f"p50 {harness.percentile(values, 50) * 1000:.2f} ms, "
        f"p99 {harness.percentile(values, 99) * 1000:.2f} ms"
    )


def per_step_ms(seconds: float, loops: int) -> str:
    return f"{seconds * 1000 / (loops * STEPS):.2f} ms"


def report_tool_loops(args: argparse.Namespace, r: ToolLoops) -> None:
    direct = [sum(d.steps) for d in r.direct]
    n = len(direct)
    print(
        f"tool loop: {STEPS} model calls ({STEPS - 1} tool calls, then text); {n} rounds "
        f"after {args.tool_warmup} warm-up, each a loop of every kind in rotating order; "
        f"upstream: {args.tool_tokens} chunks, ttft {args.tool_ttft_ms:g} ms, "
        f"gap {args.tool_gap_ms:g} ms"
    )
    print(
        f"  upstream called directly (the floor): loop {p50_p99(direct)}; "
        f"client CPU per step {per_step_ms(sum(d.client_cpu_s for d in r.direct), n)}"
    )
    print(f"    a call, request -> answer read: {p50_p99([s for d in r.direct for s in d.steps])}")
    titles = {
        "client-tool": "client tool (a model session; the client posts each result "
        "as soon as it sees the call complete)",
        "in-server": "answered in the server (agent tool_agents:tool_loop: "
        "ctx.model() + ctx.tool_result, a server tool's step)",
    }
    for way, loops in r.through.items():
        through = [loop.total for loop in loops]
        added = [(t - d) / STEPS for t, d in zip(through, direct, strict=True)]
        print(f"  {titles[way]}:")
        print(f"    loop: {p50_p99(through)}")
        print(f"    tether adds per step ((loop - direct loop) / {STEPS}): {p50_p99(added)}")
        print(f"    message -> 1st upstream request: {p50_p99([x.start for x in loops])}")
        out = [s for loop in loops for s in loop.out]
        print(f"    upstream request -> call seen by the client: {p50_p99(out)}")
        if way == "client-tool":
            back = [s for loop in loops for s in loop.back]
            print(f"    result posted -> next upstream request: {p50_p99(back)}")
            post = [s for loop in loops for s in loop.post]
            print(f"      (the result's POST round trip: {p50_p99(post)})")
        print(
            f"    events per session {statistics.median(x.events for x in loops):g}; CPU per "
            f"step: tether {per_step_ms(sum(x.tether_cpu_s for x in loops), n)}, "
            f"client {per_step_ms(sum(x.client_cpu_s for x in loops), n)}"
        )
    m = r.machine
    print(
        f"  machine meanwhile: {100 * m.busy / m.total:.0f}% busy, "
        f"{100 * m.steal / m.total:.1f}% steal"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--tokens", type=int, default=250)
    ap.add_argument("--idle-sessions", type=int, default=1000)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    ap.add_argument("--tool-loops", type=int, default=200, help="measured loops of each kind")
    ap.add_argument("--tool-warmup", type=int, default=20, help="loops of each kind not measured")
    ap.add_argument("--tool-tokens", type=int, default=8, help="upstream: chunks per answer")
    ap.add_argument("--tool-ttft-ms", type=float, default=0.0, help="upstream: to the 1st chunk")
    ap.add_argument("--tool-gap-ms", type=float, default=0.0, help="upstream: between chunks")
    ap.add_argument("--model-rounds", type=int, default=3, help="model-streaming: answers each")
    ap.add_argument("--suspended", type=int, default=10_000, help="suspended runs (and idle)")
    ap.add_argument("--resumes", type=int, default=100, help="suspended runs answered")
    ap.add_argument("--quiet-s", type=float, default=10.0, help="CPU window with runs suspended")
    args = ap.parse_args()
    scenarios = set(args.scenarios.split(","))
    if (
        not scenarios <= set(SCENARIOS)
        or min(args.tool_loops, args.model_rounds, args.suspended) < 1
        or args.tool_warmup < 0
        or not 0 <= args.resumes <= args.suspended
    ):
        ap.error(
            f"--scenarios: some of {','.join(SCENARIOS)}; --tool-loops, --model-rounds, "
            "--suspended >= 1; --resumes from 0 to --suspended"
        )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    if scenarios & {"streaming", "idle"}:
        await streaming_and_idle(args, scenarios)
    if "tool-loop" in scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            report_tool_loops(args, await run_tool_loops(args, Path(tmp)))
    if "model-streaming" in scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            report_model_streaming(args, await run_model_streaming(args, Path(tmp)))
    if "suspended" in scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            report_suspended(args, await run_suspended(args, Path(tmp)))


def agents_path() -> str:
    """PYTHONPATH for a server that loads an agent module of benchmarks/.

    The caller's PYTHONPATH stays first: an older commit's ``src/`` put there is
    what a before/after run measures.
    """
    return os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(harness.REPO_ROOT)]))


async def streaming_and_idle(args: argparse.Namespace, scenarios: set[str]) -> None:
    """The first two scenarios, on one server running the ticker agent."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        port = harness.free_port()
        server = harness.ServerProcess(
            "tether",
            [
                str(Path(sys.executable).parent / "tether"), "serve",
                "benchmarks.runtime_agents:app", "--port", str(port),
                "--data-dir", str(data), "--log-level", "warning",
            ],
            port,
            Path(tmp),
            env={"PYTHONPATH": agents_path()},
        )  # fmt: skip
        server.start()
        try:
            await server.wait_ready(30.0)
            if "streaming" in scenarios:
                samples = await streaming(server.base_url, args.sessions, args.rate, args.tokens)
            if "idle" in scenarios:
                per_idle = await idle_memory(server.base_url, server.pids, args.idle_sessions)
        finally:
            server.stop()
    if "streaming" in scenarios:
        lat = [ms for _, ms in samples]
        steady = [ms for i, ms in samples if i >= args.rate]
        print(
            f"{args.sessions} sessions x {args.rate:g} tokens/s x {args.tokens} tokens "
            f"({len(lat)} deliveries)"
        )
        print(
            f"token yield -> SSE receipt: p50 {statistics.median(lat):.2f} ms, "
            f"p99 {harness.percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms"
        )
        print(
            f"  after each session's first second: p50 {statistics.median(steady):.2f} ms, "
            f"p99 {harness.percentile(steady, 99):.2f} ms"
        )
    if "idle" in scenarios:
        print(f"memory per idle session: {per_idle:.1f} KiB ({args.idle_sessions} sessions)")


if __name__ == "__main__":
    asyncio.run(main())
