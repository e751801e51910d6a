#!/usr/bin/env python3
"""tether's own work per append, with no HTTP: the app called in-process.

Producers (64 by default) each append ~100-byte JSON messages to a stream of
their own, sequentially, by calling the ASGI app (``TetherApp``, as ``tether
serve`` builds it, on a SQLite store in a temporary directory) with a scope, a
``receive`` that hands over the body and a ``send`` that keeps the answer. What
it measures is everything an HTTP append costs tether past the HTTP server: the
front door, the streams protocol, the store and SQLite's group commit. Set
against bench_streams.py's producers-64 figures (tether, floor-uvicorn,
floor-httptools), it splits an append's server CPU between the HTTP layer and
tether's own work. Results vary with the machine's load: read them beside a
peer measured in the same run.

Usage: .venv/bin/python benchmarks/bench_append_core.py [--producers 64] [--appends 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from tether.api.app import TetherApp
from tether.store.factory import open_store
from tether.streams.app import StreamsConfig

#: The same shape of message as bench_streams.py's (about 100 bytes).
MESSAGE = b'{"seq":1,"ts":0.0,"pad":"' + b"x" * 70 + b'"}'


def scope(method: str, path: str, body: bytes) -> dict[str, Any]:
    """An HTTP/1.1 request's scope as uvicorn makes it, with the headers a client sends."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "http", "server": ("127.0.0.1", 8787), "client": ("127.0.0.1", 50000),
        "root_path": "", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8787"), (b"content-type", b"application/json"),
            (b"accept-encoding", b"identity"), (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip


async def request(app: TetherApp, method: str, path: str, body: bytes = b"") -> int:
    """One request through the app; its status."""
    answers: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        answers.append(message)

    await app(scope(method, path, body), receive, send)
    return int(answers[0]["status"])


async def produce(app: TetherApp, path: str, count: int) -> None:
    for _ in range(count):
        status = await request(app, "POST", path, MESSAGE)
        if status != 204:
            raise RuntimeError(f"POST {path} answered {status}")


async def run(producers: int, appends: int, warmup: int, data_dir: Path) -> dict[str, float]:
    app = TetherApp(open_store("sqlite", data_dir, "normal"), StreamsConfig())
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    try:
        paths = [f"/v1/stream/core-{i}" for i in range(producers)]
        for path in paths:
            if (status := await request(app, "PUT", path)) != 201:
                raise RuntimeError(f"PUT {path} answered {status}")
        await asyncio.gather(*(produce(app, path, warmup) for path in paths))
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        await asyncio.gather(*(produce(app, path, appends) for path in paths))
        wall = time.perf_counter() - wall
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan
    total = producers * appends
    return {
        "appends_per_s": total / wall,
        "cpu_us_per_append": 1e6 * cpu / total,
        "loop_cpu_us_per_append": 1e6 * loop_cpu / total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--producers", type=int, default=64)
    p.add_argument("--appends", type=int, default=2000, help="timed appends per producer")
    p.add_argument("--warmup", type=int, default=100, help="untimed appends per producer")
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args()
    results = []
    for i in range(ns.rounds):
        with tempfile.TemporaryDirectory(prefix="tether-core-") as tmp:
            r = uvloop.run(run(ns.producers, ns.appends, ns.warmup, Path(tmp)))
        results.append(r)
        print(
            f"round {i + 1}: {r['appends_per_s']:,.0f} appends/s; "
            f"{r['cpu_us_per_append']:.1f} µs CPU per append "
            f"({r['loop_cpu_us_per_append']:.1f} on the event loop's thread)"
        )
    best = sorted(results, key=lambda r: r["cpu_us_per_append"])[len(results) // 2]
    print(
        f"median of {ns.rounds}: {best['appends_per_s']:,.0f} appends/s; "
        f"{best['cpu_us_per_append']:.1f} µs CPU per append, "
        f"{best['loop_cpu_us_per_append']:.1f} on the loop's thread"
    )


if __name__ == "__main__":
    main()
