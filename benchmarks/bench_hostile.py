"""What hostile requests cost a tether server, and what another client feels meanwhile.

Each case starts a fresh ``tether serve`` (SQLite, one key so that auth is on),
sends one kind of hostile traffic, and measures:

- the server's peak RSS growth (``VmHWM`` in /proc, before and after);
- another client's latency during it (a ``GET /healthz`` every 5 ms on a
  connection of its own): p50, p99 and the worst, i.e. the longest the
  server's event loop stalled for everybody else.

Cases:

``bodies``   four unauthenticated 300 MB chunked posts to ``/v1/sessions``.
``array``    a 2 MB JSON array of a million numbers appended to a JSON stream.
``seed``     an AI SDK chat seeded with 200,000 parts (about 6 MB).
``dense``    a 10 MB body of a few million empty objects nested in one message.
``text``     a 10 MB JSON message of one long string with escapes and commas
             (legitimate: it must be stored).
``listing``  one key lists its sessions while four clients of another key, which
             holds 5,000 sessions, list theirs in a loop.

Run it against any checkout, to compare before and after in one go::

    .venv/bin/python benchmarks/bench_hostile.py                        # this checkout
    .venv/bin/python benchmarks/bench_hostile.py --src /path/to/old/src # another one

``--cases`` picks cases (comma-separated); ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import harness

KEY_A, KEY_B = "bench-key-a-5f0e1d", "bench-key-b-8c2b7a"
PROBE_EVERY = 0.005


# -- the server -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tether(src: Path | None, workdir: Path) -> AsyncIterator[harness.ServerProcess]:
    """A fresh ``tether serve`` (SQLite in ``workdir``, two keys), stopped on exit."""
    data = workdir / "data"
    data.mkdir()
    port = harness.free_port()
    env = {"TETHER_API_KEYS": f"{KEY_A},{KEY_B}", "TETHER_SECRET": "s" * 32}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    exe = Path(sys.executable).parent / "tether"
    argv = [str(exe), "serve", "--port", str(port), "--data-dir", str(data)]
    server = harness.ServerProcess(
        "tether", [*argv, "--log-level", "warning"], port, workdir, env=env
    )
    server.start()
    try:
        await server.wait_ready(15.0)
        yield server
    finally:
        server.stop()


def peak_rss_mib(pids: list[int]) -> float:
    return harness.peak_rss_kib(pids) / 1024


# -- the bystander --------------------------------------------------------------------


def probe(base: str, stop: threading.Event, out: list[float]) -> None:
    """The other client, on a thread of its own: the attacker's client work cannot delay it."""
    with httpx.Client(timeout=120) as c:
        while not stop.is_set():
            t = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                c.get(base + "/healthz")
            out.append(time.perf_counter() - t)
            time.sleep(PROBE_EVERY)


async def measure(
    server: harness.ServerProcess, attack: Callable[[], Awaitable[str]]
) -> dict[str, Any]:
    latencies: list[float] = []
    stop = threading.Event()
    await asyncio.sleep(0.5)
    before = peak_rss_mib(server.pids)
    bystander = threading.Thread(target=probe, args=(server.base_url, stop, latencies))
    bystander.start()
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    outcome = await attack()
    took = time.perf_counter() - t0
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.to_thread(bystander.join)
    ms = [x * 1000 for x in latencies]
    return {
        "outcome": outcome,
        "seconds": round(took, 2),
        "peak_rss_growth_mib": round(peak_rss_mib(server.pids) - before, 1),
        "other_p50_ms": round(statistics.median(ms), 2),
        "other_p99_ms": round(harness.percentile(ms, 99), 2),
        "other_max_ms": round(max(ms), 1),
    }


# -- the attacks ----------------------------------------------------------------------


def chunked_post(base: str, path: str, total: int) -> str:
    """Stream ``total`` bytes as chunks until the server answers; its status line."""
    host, port = base.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        sent = 0
        while sent < total:
            with contextlib.suppress(BlockingIOError):
                answer = sock.recv(200)
                if answer:
                    return answer.split(b"\r\n", 1)[0].decode()
            try:
                sock.setblocking(True)
                sock.sendall(chunk)
                sock.setblocking(False)
            except OSError:
                break
            sent += 1 << 20
        sock.setblocking(True)
        sock.sendall(b"0\r\n\r\n")
        return sock.recv(200).split(b"\r\n", 1)[0].decode()


def keyed(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def case_bodies(base: str) -> str:
    statuses = []
    for _ in range(4):
        statuses.append(await asyncio.to_thread(chunked_post, base, "/v1/sessions", 300 << 20))
    return "; ".join(statuses)


async def _post_json_stream(base: str, body: bytes) -> str:
    async with httpx.AsyncClient(timeout=300, headers=keyed(KEY_A)) as c:
        await c.put(base + "/v1/stream/j", headers={"content-type": "application/json"})
        r = await c.post(base + "/v1/stream/j", content=body,
                         headers={"content-type": "application/json"})  # fmt: skip
        return str(r.status_code)


# Bodies are made before the clock starts: the probe measures the server, not this client.
ARRAY = b"[" + b",".join([b"1"] * 1_000_000) + b"]"
DENSE = b"[[" + b",".join([b"{}"] * 3_300_000) + b"]]"
TEXT = json.dumps({"text": "word,\n" * 1_400_000}).encode()
SEED = json.dumps(
    {
        "id": "seeded",
        "messages": [
            {
                "id": "a0",
                "role": "assistant",
                "parts": [{"type": "text", "text": "x" * 8}] * 200_000,
            },
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]},
        ],
    }
).encode()


async def case_array(base: str) -> str:
    return await _post_json_stream(base, ARRAY)


async def case_dense(base: str) -> str:
    return await _post_json_stream(base, DENSE)


async def case_text(base: str) -> str:
    return await _post_json_stream(base, TEXT)


async def case_seed(base: str) -> str:
    async with httpx.AsyncClient(timeout=300, headers=keyed(KEY_A)) as c:
        r = await c.post(
            base + "/v1/aisdk/chat", content=SEED, headers={"content-type": "application/json"}
        )
        return str(r.status_code)


async def case_listing(base: str) -> str:
    async with httpx.AsyncClient(timeout=60, headers=keyed(KEY_B)) as b:
        sem = asyncio.Semaphore(16)

        async def make() -> None:
            async with sem:
                await b.post(base + "/v1/sessions", json={})

        await asyncio.gather(*(make() for _ in range(5000)))
    stop = asyncio.Event()

    async def loop_listing() -> None:
        async with httpx.AsyncClient(timeout=60, headers=keyed(KEY_B)) as c:
            while not stop.is_set():
                await c.get(base + "/v1/sessions")

    loopers = [asyncio.create_task(loop_listing()) for _ in range(4)]
    mine: list[float] = []
    async with httpx.AsyncClient(timeout=60, headers=keyed(KEY_A)) as a:
        for _ in range(100):
            t = time.perf_counter()
            await a.get(base + "/v1/sessions")
            mine.append((time.perf_counter() - t) * 1000)
    stop.set()
    await asyncio.gather(*loopers)
    p99 = harness.percentile(mine, 99)
    return f"key A's listing p50 {statistics.median(mine):.1f} ms, p99 {p99:.1f} ms"


CASES: dict[str, Callable[[str], Awaitable[str]]] = {
    "bodies": case_bodies,
    "array": case_array,
    "seed": case_seed,
    "dense": case_dense,
    "text": case_text,
    "listing": case_listing,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--src", type=Path, help="the src/ folder of the tether to measure")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = {}
    for name in args.cases.split(","):
        with tempfile.TemporaryDirectory(prefix="tether-hostile-") as tmp:
            async with tether(args.src, Path(tmp)) as server:
                attack = functools.partial(CASES[name], server.base_url)
                results[name] = await measure(server, attack)
        print(f"{name:8} {json.dumps(results[name])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
