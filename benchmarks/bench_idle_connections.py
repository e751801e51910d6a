#!/usr/bin/env python3
"""Benchmark: one client's latency while thousands of other connections send nothing.

Starts `tether serve` (a fresh one per case, optionally under `prlimit
--nofile=N`), floods it from a separate process, and meanwhile times one
ordinary client, back to back for --duration seconds:

  healthz  GET /healthz on a new connection (connect, request, whole response, close)
  append   POST of a ~100-byte JSON message to a stream, on one keep-alive connection

Cases:
  none         no flood: the baseline
  idle         --connections TCP connections that never send a byte
  slow-header  --connections connections that send the start of a request head,
               then one more header line every --drip-interval seconds

The flood re-opens every connection the server closes, as an attacker would, so
it keeps holding as many as the server lets it. A request that gets no whole
answer within --request-timeout, or whose connection is refused or reset,
counts as a failure. Also reported: how many connections the flood held (min
and max of its samples while the client was timed), how many the server closed
per second, and the server's CPU and RSS. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, cast

try:
    import harness
except ModuleNotFoundError:  # imported from elsewhere, not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness
import bench_streams as bs

HOST = harness.HOST
CASES = ("none", "idle", "slow-header")
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: flood\r\n"
DRIP = b"X-Drip: 1\r\n"
#: Connections the flood opens at once (more only overflow the server's accept backlog).
CONNECTORS = 64
#: Seconds between two samples of the flood's state.
SAMPLE_S = 0.5


# --------------------------------------------------------------------------- the flood


@dataclass
class FloodState:
    """What the flood process reports, every SAMPLE_S seconds."""

    open: int = 0
    closed_by_server: int = 0
    connect_errors: int = 0


class _FloodConnection(asyncio.Protocol):
    def __init__(self, flood: _Flood) -> None:
        self.flood = flood
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.flood.open.add(self)
        if self.flood.slow_header:
            self.transport.write(SLOW_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self.flood.open.discard(self)
        if not self.flood.stopping:
            self.flood.state.closed_by_server += 1
            self.flood.reopen.put_nowait(None)


class _Flood:
    """Holds `count` connections to the server, re-opening those it closes."""

    def __init__(self, port: int, count: int, slow_header: bool, drip_s: float) -> None:
        self.port = port
        self.count = count
        self.slow_header = slow_header
        self.drip_s = drip_s
        self.open: set[_FloodConnection] = set()
        self.reopen: asyncio.Queue[None] = asyncio.Queue()
        self.state = FloodState()
        self.stopping = False

    async def _connector(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.reopen.get()
            try:
                async with asyncio.timeout(5):
                    await loop.create_connection(lambda: _FloodConnection(self), HOST, self.port)
            except (OSError, TimeoutError):
                self.state.connect_errors += 1
                await asyncio.sleep(0.05)
                self.reopen.put_nowait(None)

    async def _drip(self) -> None:
        """One header line per connection per drip interval, spread over ten steps."""
        step = 0
        while True:
            await asyncio.sleep(self.drip_s / 10)
            for i, conn in enumerate(list(self.open)):
                if i % 10 == step and conn.transport is not None:
                    conn.transport.write(DRIP)
            step = (step + 1) % 10

    async def run(self, stop: MpEvent, states: mp.Queue[FloodState]) -> None:
        for _ in range(self.count):
            self.reopen.put_nowait(None)
        tasks = [asyncio.create_task(self._connector()) for _ in range(CONNECTORS)]
        if self.slow_header:
            tasks.append(asyncio.create_task(self._drip()))
        try:
            while not stop.is_set():
                self.state.open = len(self.open)
                states.put(FloodState(**vars(self.state)))
                await asyncio.sleep(SAMPLE_S)
        finally:
            self.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in list(self.open):
                if conn.transport is not None:
                    conn.transport.abort()


def flood_main(
    port: int, count: int, slow_header: bool, drip_s: float, stop: MpEvent,
    states: mp.Queue[FloodState],
) -> None:  # fmt: skip
    """The flood process's entry point."""
    loop_factory, _ = harness.client_loop(no_uvloop=False)
    flood = _Flood(port, count, slow_header, drip_s)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(flood.run(stop, states))


# --------------------------------------------------------------------------- the client


@dataclass
class CaseResult:
    case: str
    healthz_ms: list[float] = field(default_factory=list)
    append_ms: list[float] = field(default_factory=list)
    healthz_failures: int = 0
    append_failures: int = 0
    held_min: int = 0
    held_max: int = 0
    closed_per_s: float = 0.0
    connect_errors: int = 0
    server_cpu_pct: float = 0.0
    server_cpu_s: float = 0.0
    server_rss_mib: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            return round(harness.percentile(values, q), 3)

        answered = len(self.healthz_ms) + len(self.append_ms)
        return {
            "case": self.case,
            "healthz_p50_ms": pct(self.healthz_ms, 50),
            "healthz_p99_ms": pct(self.healthz_ms, 99),
            "healthz_requests": len(self.healthz_ms) + self.healthz_failures,
            "healthz_failures": self.healthz_failures,
            "append_p50_ms": pct(self.append_ms, 50),
            "append_p99_ms": pct(self.append_ms, 99),
            "append_requests": len(self.append_ms) + self.append_failures,
            "append_failures": self.append_failures,
            "flood_held_min": self.held_min,
            "flood_held_max": self.held_max,
            "flood_closed_by_server_per_s": round(self.closed_per_s, 1),
            "flood_connect_errors": self.connect_errors,
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "server_cpu_us_per_pair": round(self.server_cpu_s * 2e6 / answered)
            if answered
            else None,
            "server_rss_mib": round(self.server_rss_mib, 1),
            "first_errors": self.errors[:5],
        }


async def healthz(port: int, timeout_s: float) -> None:
    """GET /healthz on a connection of its own, read to the end; raise unless 200."""
    # The Host names this server: it answers no other (400).
    head = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(head.encode())
            response = await reader.read(-1)
        finally:
            writer.close()
    if not response.startswith(b"HTTP/1.1 200 "):
        raise harness.BenchError(f"healthz: {response[:80]!r}")


class Client:
    """The client that is timed: healthz and appends, one after the other."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.stream_url = f"http://{HOST}:{port}/v1/stream/bench-idle"
        self.appender = bs.RawHttpConnection(self.stream_url, timeout_s)
        self.seq = 0

    async def create_stream(self) -> None:
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_connection(HOST, self.port)
            writer.write(
                f"PUT /v1/stream/bench-idle HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: "
                "application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            response = await reader.read(-1)
            writer.close()
        if not response.startswith((b"HTTP/1.1 201 ", b"HTTP/1.1 200 ")):
            raise harness.BenchError(f"PUT stream: {response[:80]!r}")

    async def one_healthz(self, result: CaseResult | None) -> None:
        started = time.perf_counter()
        try:
            await healthz(self.port, self.timeout_s)
        except (OSError, TimeoutError, harness.BenchError, asyncio.IncompleteReadError) as err:
            if result is not None:
                result.healthz_failures += 1
                result.errors.append(f"healthz: {type(err).__name__}: {err}")
            return
        if result is not None:
            result.healthz_ms.append((time.perf_counter() - started) * 1000)

    async def one_append(self, result: CaseResult | None) -> None:
        self.seq += 1
        body = bs.make_message(self.seq, time.time())
        started = time.perf_counter()
        try:
            await self.appender.append(body)
        except (OSError, TimeoutError, harness.BenchError, asyncio.IncompleteReadError) as err:
            self.appender.close()  # the next append opens a new connection
            if result is not None:
                result.append_failures += 1
                result.errors.append(f"append: {type(err).__name__}: {err}")
            return
        if result is not None:
            result.append_ms.append((time.perf_counter() - started) * 1000)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class Settings:
    tether_bin: str
    tether_extra_args: tuple[str, ...]
    server_nofile: int | None
    connections: int
    cases: tuple[str, ...]
    duration_s: float
    warmup: int
    settle_s: float
    drip_s: float
    request_timeout_s: float
    startup_timeout_s: float
    json_path: Path | None
    markdown: bool


def server_argv(s: Settings, port: int, data_dir: Path) -> list[str]:
    argv = [
        s.tether_bin, "serve", "--host", HOST, "--port", str(port),
        "--data-dir", str(data_dir), "--store", "sqlite", *s.tether_extra_args,
    ]  # fmt: skip
    if s.server_nofile is not None:
        argv = ["prlimit", f"--nofile={s.server_nofile}:{s.server_nofile}", "--", *argv]
    return argv


def drain(states: mp.Queue[FloodState]) -> list[FloodState]:
    out = []
    with contextlib.suppress(Exception):
        while True:
            out.append(states.get_nowait())
    return out


async def wait_for_flood(s: Settings, states: mp.Queue[FloodState], last: FloodState) -> FloodState:
    """Until the flood holds every connection, or stops gaining for --settle seconds."""
    best, best_at = last.open, time.monotonic()
    while time.monotonic() - best_at < s.settle_s:
        for state in drain(states):
            last = state
            if state.open > best:
                best, best_at = state.open, time.monotonic()
        if last.open >= s.connections:
            break
        await asyncio.sleep(0.1)
    return last


async def run_case(s: Settings, case: str, workroot: Path) -> CaseResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=workroot))
    (workdir / "data").mkdir()
    port = harness.free_port()
    server = harness.ServerProcess("tether", server_argv(s, port, workdir / "data"), port, workdir)
    result = CaseResult(case)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    states: mp.Queue[FloodState] = ctx.Queue()
    flood: mp.process.BaseProcess | None = None
    server.start()
    try:
        await server.wait_ready(s.startup_timeout_s)
        client = Client(port, s.request_timeout_s)
        await client.create_stream()
        for _ in range(s.warmup):
            await client.one_healthz(None)
            await client.one_append(None)
        last = FloodState()
        if case != "none":
            flood = ctx.Process(
                target=flood_main,
                args=(port, s.connections, case == "slow-header", s.drip_s, stop, states),
                daemon=True,
            )
            flood.start()
            last = await wait_for_flood(s, states, last)
        held = [last.open]
        closed_before = last.closed_by_server
        cpu_before = harness.cpu_seconds(server.pids)
        started = time.monotonic()
        while time.monotonic() - started < s.duration_s:
            await client.one_healthz(result)
            await client.one_append(result)
            for state in drain(states):
                last = state
                held.append(state.open)
        span = time.monotonic() - started
        result.server_cpu_s = harness.cpu_seconds(server.pids) - cpu_before
        result.server_cpu_pct = result.server_cpu_s / span * 100
        result.server_rss_mib = harness.rss_kib(server.pids) / 1024
        result.held_min, result.held_max = min(held), max(held)
        result.closed_per_s = (last.closed_by_server - closed_before) / span
        result.connect_errors = last.connect_errors
    finally:
        stop.set()
        if flood is not None:
            flood.join(10)
            if flood.is_alive():
                flood.kill()
        server.stop()
    return result


COLUMNS = (
    ("case", "case"),
    ("healthz p50 ms", "healthz_p50_ms"),
    ("healthz p99 ms", "healthz_p99_ms"),
    ("healthz failed", "healthz_failures"),
    ("append p50 ms", "append_p50_ms"),
    ("append p99 ms", "append_p99_ms"),
    ("append failed", "append_failures"),
    ("flood held", "flood_held"),
    ("closed by server /s", "flood_closed_by_server_per_s"),
    ("server CPU %", "server_cpu_pct"),
    ("server CPU us/pair", "server_cpu_us_per_pair"),
    ("server RSS MiB", "server_rss_mib"),
)


def table(summaries: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = [title for title, _ in COLUMNS]
    rows = []
    for summary in summaries:
        row = []
        for _, key in COLUMNS:
            if key == "flood_held":
                lo, hi = summary["flood_held_min"], summary["flood_held_max"]
                row.append(f"{lo}" if lo == hi else f"{lo}..{hi}")
            elif key == "healthz_failures":
                row.append(f"{summary[key]}/{summary['healthz_requests']}")
            elif key == "append_failures":
                row.append(f"{summary[key]}/{summary['append_requests']}")
            else:
                row.append(str(summary[key]))
        rows.append(row)
    return header, rows


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--tether-bin", default=str(harness.REPO_ROOT / ".venv" / "bin" / "tether"))
    p.add_argument(
        "--tether-extra-args", default="", help="more `tether serve` arguments (shell-quoted)"
    )
    p.add_argument(
        "--server-nofile", type=int, default=None,
        help="run the server under `prlimit --nofile=N:N` (default: inherit this process's)",
    )  # fmt: skip
    p.add_argument("--connections", type=int, default=5000, help="connections in the flood")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--duration", type=float, default=20.0, help="seconds the client is timed")
    p.add_argument("--warmup", type=int, default=100, help="untimed request pairs first")
    p.add_argument(
        "--settle", type=float, default=10.0,
        help="stop waiting for the flood once it has gained nothing for this many seconds",
    )  # fmt: skip
    p.add_argument("--drip-interval", type=float, default=1.0, help="slow-header: seconds/line")
    p.add_argument("--request-timeout", type=float, default=2.0)
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args(argv)
    cases = tuple(c for c in args.cases.split(",") if c)
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    return Settings(
        tether_bin=args.tether_bin,
        tether_extra_args=tuple(shlex.split(args.tether_extra_args)),
        server_nofile=args.server_nofile,
        connections=args.connections,
        cases=cases,
        duration_s=args.duration,
        warmup=args.warmup,
        settle_s=args.settle,
        drip_s=args.drip_interval,
        request_timeout_s=args.request_timeout,
        startup_timeout_s=args.startup_timeout,
        json_path=args.json,
        markdown=args.markdown,
    )


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    harness.raise_nofile(s.connections * 2 + 1024)  # the flood process inherits it

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # so that the servers and the flood are stopped

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    loop_factory, loop_name = harness.client_loop(no_uvloop=False)
    workroot = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    summaries = []
    try:
        for case in s.cases:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                summary = runner.run(run_case(s, case, workroot)).summary()
            summaries.append(summary)
            print(json.dumps(summary), file=sys.stderr)
    finally:
        harness.kill_all_servers()
        harness.cleanup_workroot(workroot, keep_logs=False)
    header, rows = table(summaries)
    render = harness.format_markdown_table if s.markdown else harness.format_text_table
    print(f"command: {harness.command_line()}")
    print(f"client: {loop_name}; flood: {s.connections} connections from a separate process")
    print(render(header, rows))
    if s.json_path is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()}
        s.json_path.write_text(json.dumps({"settings": settings, "cases": summaries}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
