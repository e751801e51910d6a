"""What the subscriptions' append hook costs plain appends: an interleaved A/B.

Three servers on SQLite, started in turn and measured the same way, their order
rotated every round so that a machine busy with something else weighs on each
alike:

- ``base``: the tree at ``--base`` (before subscriptions), extracted with ``git archive``;
- ``hook``: this tree, no subscription (the hook answers at its first check);
- ``hook+subs``: this tree with ``--subs`` subscriptions whose patterns and explicit
  streams match none of the appended streams (every append is checked against them).

Each measurement: ``--clients`` clients, each appending small JSON events to a
stream of its own as fast as answers come, for ``--seconds``; appends per
second, latency p50/p99 (nearest rank) and the server's CPU per append.

    .venv/bin/python benchmarks/bench_subscription_hook.py --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from harness import (
    REPO_ROOT,
    ServerProcess,
    format_text_table,
    free_port,
    kill_all_servers,
    over_rounds,
    percentile,
)

ARMS = ("base", "hook", "hook+subs")
JSON = {"Content-Type": "application/json"}


def server(arm: str, workdir: Path, base_src: Path) -> ServerProcess:
    port = free_port()
    data = workdir / f"{arm}-{port}"
    data.mkdir(parents=True)
    argv = [sys.executable, "-m", "tether", "serve", "--port", str(port),
            "--data-dir", str(data), "--store", "sqlite", "--log-level", "warning"]  # fmt: skip
    env = {"PYTHONPATH": str(base_src)} if arm == "base" else {}
    return ServerProcess(arm, argv, port, data, env=env, log_name="server.log")


async def subscribe(http: aiohttp.ClientSession, url: str, n: int) -> None:
    async with http.put(f"{url}/v1/stream/wake", data=b"[]", headers=JSON) as r:
        assert r.status == 201, r.status
    for i in range(n):
        config = {"type": "pull-wake", "pattern": f"other/{i}/*", "wake_stream": "wake",
                  "streams": [f"other/explicit-{i}"]}  # fmt: skip
        async with http.put(f"{url}/v1/stream/__ds/subscriptions/s{i}", json=config) as r:
            assert r.status == 201, (r.status, await r.text())


async def measure(arm: str, proc: ServerProcess, args: argparse.Namespace) -> dict[str, float]:
    url = proc.base_url
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:
        if arm == "hook+subs":
            await subscribe(http, url, args.subs)
        streams = [f"{url}/v1/stream/bench/c{i}" for i in range(args.clients)]
        for s in streams:
            async with http.put(s, data=b"[]", headers=JSON) as r:
                assert r.status == 201
        body = b'{"type":"text-delta","delta":"hello"}'

        async def client(stream: str, until: float, record: bool) -> None:
            while time.perf_counter() < until:
                began = time.perf_counter()
                async with http.post(stream, data=body, headers=JSON) as r:
                    assert r.status == 204, r.status
                if record:
                    latencies.append(time.perf_counter() - began)

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(client(s, warm, False) for s in streams))
        cpu0, t0 = proc.cpu(), time.perf_counter()
        until = t0 + args.seconds
        await asyncio.gather(*(client(s, until, True) for s in streams))
        elapsed, cpu = time.perf_counter() - t0, proc.cpu() - cpu0
    n = len(latencies)
    return {
        "appends/s": n / elapsed,
        "p50 ms": percentile(latencies, 50) * 1000,
        "p99 ms": percentile(latencies, 99) * 1000,
        "cpu us/append": cpu / n * 1e6,
    }


def extract(rev: str, into: Path) -> Path:
    """The ``src`` tree of commit ``rev``, written under ``into``."""
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=REPO_ROOT,
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


async def run(args: argparse.Namespace, work: Path, base_src: Path) -> None:
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        order = ARMS[r % 3 :] + ARMS[: r % 3]
        for arm in order:
            proc = server(arm, work, base_src)
            proc.start()
            try:
                await proc.wait_ready(30)
                figures = await measure(arm, proc, args)
            finally:
                proc.stop()
            results[arm].append(figures)
            print(f"round {r + 1} {arm:10s} " + "  ".join(
                f"{k} {v:.1f}" for k, v in figures.items()), flush=True)  # fmt: skip
    keys = list(results["base"][0])
    rows = []
    for arm in ARMS:
        spans = [over_rounds([f[k] for f in results[arm]]) for k in keys]
        cells = [f"{v['median']:.1f} ({v['min']:.0f}-{v['max']:.0f})" for v in spans]
        rows.append([arm, *cells])
    print(f"\nmedian (min-max) of {args.rounds} rounds, {args.clients} clients, "
          f"{args.seconds:g} s each:")  # fmt: skip
    print(format_text_table(["arm", *keys], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="3de611c", help="the commit before subscriptions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--subs", type=int, default=20)
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-subhook-") as tmp:
            work = Path(tmp)
            asyncio.run(run(args, work, extract(args.base, work)))
    finally:
        kill_all_servers()


if __name__ == "__main__":
    main()
