"""Runtime cost: many sessions streaming at once, token yield to SSE receipt; a tool loop.

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

    .venv/bin/python benchmarks/bench_runtime.py [--sessions 100] [--rate 50] [--tokens 250]
        [--scenarios streaming,idle,tool-loop] [--tool-loops 200]
    # an older commit: its src/ first on PYTHONPATH (tool-loop needs issue 18's ctx.model())
    PYTHONPATH=<old>/src .venv/bin/python benchmarks/bench_runtime.py --scenarios streaming,idle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
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
SCENARIOS = ("streaming", "idle", "tool-loop")


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


async def run_tool_loops(args: argparse.Namespace, tmp: Path) -> ToolLoops:
    """Start the upstream and a tether in front of it; measure; stop both."""
    up_port, port = harness.free_port(), harness.free_port()
    upstream = harness.ServerProcess(
        "upstream",
        [
            sys.executable, str(harness.REPO_ROOT / "benchmarks" / "upstream.py"),
            "--port", str(up_port), "--tokens", str(args.tool_tokens),
            "--ttft-ms", str(args.tool_ttft_ms), "--gap-ms", str(args.tool_gap_ms),
            "--model", MODEL, "--tool-steps", str(STEPS - 1), "--exit-on-stdin-close",
        ],
        up_port,
        tmp,
        log_name="upstream.log",
        health_path="/health",
    )  # fmt: skip
    data = tmp / "tool-loop-data"
    data.mkdir()
    server = harness.ServerProcess(
        "tether",
        [
            str(Path(sys.executable).parent / "tether"), "serve",
            "benchmarks.tool_agents:app", "--port", str(port),
            "--data-dir", str(data), "--log-level", "warning",
        ],
        port,
        tmp,
        env={
            "PYTHONPATH": agents_path(),
            "TETHER_OPENAI_BASE_URL": f"{upstream.base_url}/v1",
            "TETHER_OPENAI_API_KEY": "bench-key",
            "TETHER_OPENAI_MODELS": MODEL,
        },
        log_name="tool-loop-server.log",
    )  # fmt: skip
    upstream.start()
    try:
        await upstream.wait_ready(30.0)
        server.start()
        try:
            await server.wait_ready(30.0)
            return await tool_loops(server, upstream.base_url, args.tool_loops, args.tool_warmup)
        finally:
            server.stop()
    finally:
        upstream.stop()


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
    args = ap.parse_args()
    scenarios = set(args.scenarios.split(","))
    if not scenarios <= set(SCENARIOS) or args.tool_loops < 1 or args.tool_warmup < 0:
        ap.error(f"--scenarios: some of {','.join(SCENARIOS)}; --tool-loops >= 1")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    if scenarios & {"streaming", "idle"}:
        await streaming_and_idle(args, scenarios)
    if "tool-loop" in scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            report_tool_loops(args, await run_tool_loops(args, Path(tmp)))


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
