#!/usr/bin/env python3
"""Benchmark tether workers: runs per second through one server with 1, 2 and 4 workers.

Starts a `tether serve` (SQLite, or --store redis://...) with the agent
``bench`` (benchmarks/worker_agents.py) served by workers, then, for each
worker count, that many `tether worker worker_agents:app` processes, and
drives --runs runs (--concurrency sessions at once, each a fresh session:
create, follow its events over SSE, send a message, wait for its run-end).
Reported per worker count:

  runs/s        runs completed per second of wall time
  start p50/99  ms from the send's answer to the run's `run-start` as a reader
                receives it (the dispatch: work stream, wake, claim, lease,
                opening events written by the worker)
  first p50/99  ms from the send's answer to the answer's first text delta
  added p50/99  ms from `run-start` to that first delta, run by run: what the
                worker adds once it holds the run (a model's own time to its
                first token would count too; the demo model takes none)

Worker counts run one after another on fresh processes; the machine's load
moves the figures (say so when you report them). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness import (
    REPO_ROOT,
    BenchError,
    ServerProcess,
    format_text_table,
    free_port,
    kill_all_servers,
    percentile,
)

KEY = "bench-worker-key"
TETHER = str(REPO_ROOT / ".venv" / "bin" / "tether")


async def one_run(c: httpx.AsyncClient) -> tuple[float, float]:
    """One run in a fresh session: (ms to run-start, ms to the first delta) from the send."""
    sid = (await c.post("/v1/sessions", json={"agent": "bench"})).json()["id"]
    sent = 0.0
    started = first = None
    async with c.stream("GET", f"/v1/sessions/{sid}/events?offset=-1") as events:
        lines = events.aiter_lines()
        r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
        sent = time.monotonic()
        r.raise_for_status()
        async for line in lines:
            if not line.startswith("data: "):
                continue
            kind = json.loads(line[6:])["type"]
            now = time.monotonic()
            if kind == "run-start" and started is None:
                started = now
            elif kind == "part-delta" and first is None:
                first = now
            elif kind == "run-end":
                break
    if started is None or first is None:
        raise BenchError(f"session {sid}: the run ended without starting or writing")
    return (started - sent) * 1000, (first - sent) * 1000


async def measure(base_url: str, runs: int, concurrency: int) -> tuple[float, list, list]:
    limits = httpx.Limits(max_connections=2 * concurrency + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as c:
        for _ in range(3):  # warm-up: imports, connections, the first claims
            await one_run(c)
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(runs):
            queue.put_nowait(None)
        starts: list[float] = []
        firsts: list[float] = []

        async def loop() -> None:
            while not queue.empty():
                queue.get_nowait()
                start, first = await one_run(c)
                starts.append(start)
                firsts.append(first)

        began = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return runs / (time.monotonic() - began), starts, firsts


async def bench(args: argparse.Namespace, workdir: Path) -> list[list[str]]:
    env = {"TETHER_WORKER_KEYS": KEY, "TETHER_WORKER_AGENTS": "bench", "TETHER_WORKER_KEY": KEY}
    # This checkout's code, not whichever the virtualenv's editable install points at.
    env["PYTHONPATH"] = f"{REPO_ROOT / 'src'}:{REPO_ROOT / 'benchmarks'}"
    rows = []
    for count in args.workers:
        port = free_port()
        data = workdir / f"data-{count}"
        server = ServerProcess(
            "server", [TETHER, "serve", "--port", str(port), "--data-dir", str(data),
                       "--store", args.store, "--log-level", "warning"],
            port, workdir, env=env, log_name=f"server-{count}.log",
        )  # fmt: skip
        procs = [server]
        try:
            server.start()
            await server.wait_ready(30)
            for i in range(count):
                worker = ServerProcess(
                    f"worker-{i}", [TETHER, "worker", "worker_agents:app", "--server",
                                    server.base_url], port, workdir, env=env,
                    log_name=f"worker-{count}-{i}.log",
                )  # fmt: skip
                procs.append(worker)
                worker.start()

                async def serving(w: ServerProcess = worker) -> bool:
                    return "tether.worker: serving" in w.log_path.read_text(errors="replace")

                await worker.wait_ready(30, serving)
            rate, starts, firsts = await measure(server.base_url, args.runs, args.concurrency)
            added = [first - start for start, first in zip(starts, firsts, strict=True)]
        finally:
            for proc in reversed(procs):
                proc.stop()
        rows.append([
            f"{count} worker{'s' if count > 1 else ''}", f"{rate:.1f}",
            f"{percentile(starts, 50):.0f} / {percentile(starts, 99):.0f}",
            f"{percentile(firsts, 50):.0f} / {percentile(firsts, 99):.0f}",
            f"{percentile(added, 50):.0f} / {percentile(added, 99):.0f}",
        ])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts (comma-separated)")
    parser.add_argument("--runs", type=int, default=200, help="runs per worker count")
    parser.add_argument("--concurrency", type=int, default=16, help="sessions at once")
    parser.add_argument("--store", default="sqlite", help="sqlite, or a redis:// URL")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        rows = asyncio.run(bench(args, workdir))
    except BenchError as err:
        sys.exit(f"bench_workers: {err}")
    finally:
        kill_all_servers()
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs: {workdir}")
    header = ["", "runs/s", "start p50/p99 ms", "first p50/p99 ms", "added p50/p99 ms"]
    print(f"{args.runs} runs, {args.concurrency} at once, store {args.store}")
    print(format_text_table(header, rows))


if __name__ == "__main__":
    main()
