"""Runtime cost: many sessions streaming at once, token yield to SSE receipt.

Starts `tether serve benchmarks.runtime_agents:app` (SQLite store), opens one
SSE reader per session on the native event stream, starts a run in every
session (each streams TOKENS tokens at RATE tokens/s) and records, for every
token, the time from the agent yielding it to the reader receiving it. Then
measures the server's memory per idle session.

    .venv/bin/python benchmarks/bench_runtime.py [--sessions 100] [--rate 50] [--tokens 250]
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
from pathlib import Path

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


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--tokens", type=int, default=250)
    ap.add_argument("--idle-sessions", type=int, default=1000)
    args = ap.parse_args()
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
            env={"PYTHONPATH": str(harness.REPO_ROOT)},
        )  # fmt: skip
        server.start()
        try:
            await server.wait_ready(30.0)
            samples = await streaming(server.base_url, args.sessions, args.rate, args.tokens)
            lat = [ms for _, ms in samples]
            steady = [ms for i, ms in samples if i >= args.rate]
            per_idle = await idle_memory(server.base_url, server.pids, args.idle_sessions)
        finally:
            server.stop()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
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
    print(f"memory per idle session: {per_idle:.1f} KiB ({args.idle_sessions} sessions)")


if __name__ == "__main__":
    asyncio.run(main())
