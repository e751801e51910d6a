#!/usr/bin/env python3
"""Benchmark tether's Redis scale-out: what sharing one Redis between replicas costs.

Starts its own redis-server (temporary directory, free port, append-only file
fsynced every second unless told otherwise) and, round after round, fresh
`tether serve` processes on it, then compares in the same run:

  fanout   one JSON stream, --readers SSE readers, --fanout-appends paced appends
           (one every --interval-ms, each carrying its send time); delivery
           latency p50/p99 and deliveries/s on
             1-replica   one `tether serve --store redis://...` with every reader
             N-replicas  --replicas (3) processes on the same Redis, readers spread
                         evenly, the producer posting to replica 1
           goal: p99(N replicas) / p99(1 replica) <= 1.2, at 300 readers and at
           3,000 (--readers 3000: 1,000 per replica)
  appends  sequential appends on one keep-alive connection, appends/s and RTT
           p50/p99, `--store redis://...` vs `--store sqlite` (fresh data dir)
           goal: appends/s(redis) / appends/s(sqlite) >= 0.6
           (64 concurrent producers, Redis against SQLite: bench_streams.py
           --targets tether,tether-redis --scenarios producers-64)

The targets of a pair alternate within each round (their order swaps from one
round to the next); the table shows medians over rounds. The scenarios are
those of bench_streams.py, imported from it. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis
from redis.exceptions import RedisError

try:
    import harness
except ModuleNotFoundError:  # imported from elsewhere, not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness
import bench_streams as bs

HOST = harness.HOST
ALL_SCENARIOS = ("fanout", "appends")
FSYNC_POLICIES = ("always", "everysec", "no")
#: Goals from issue 24 (scale on one machine; the scale-out issue asked 1.5 and 0.5).
MAX_P99_RATIO = 1.2
MIN_APPEND_RATIO = 0.6
#: Redis commands whose cost per call is worth reporting (from INFO commandstats).
REDIS_COMMANDS = ("fcall", "evalsha", "publish", "xadd")
#: Other processes using more than this (% of one core) during a session are reported.
BUSY_WARNING_PCT = 15.0
#: The bench_streams settings this benchmark uses, recorded in --json.
JSON_SETTINGS = (
    "rounds", "appends", "append_warmup", "fanout_readers", "fanout_messages",
    "fanout_interval_ms", "request_timeout_s", "scenario_timeout_s", "startup_timeout_s",
    "client", "tether_bin", "tether_extra_args",
)  # fmt: skip


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ScaleConfig:
    """This benchmark's settings; `streams` is the bench_streams Config its scenarios read."""

    streams: bs.Config
    scenarios: tuple[str, ...]
    replicas: int
    redis_bin: str
    redis_fsync: str
    keep_going: bool
    verbose: bool

    @property
    def fanout_targets(self) -> tuple[str, str]:
        return "1-replica", f"{self.replicas}-replicas"

    @property
    def append_targets(self) -> tuple[str, str]:
        return "redis", "sqlite"


def parse_args(argv: Sequence[str] | None = None) -> tuple[ScaleConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description="Benchmark tether's Redis scale-out: fan-out through 1 vs N replicas "
        "on one Redis, and sequential appends on the Redis vs the SQLite store.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every target once")
    p.add_argument("--replicas", type=int, default=3, help="replicas of the scale-out target")
    p.add_argument("--readers", type=int, default=300, help="SSE readers (fanout)")
    p.add_argument("--fanout-appends", type=int, default=200, help="paced appends (fanout)")
    p.add_argument(
        "--interval-ms",
        type=float,
        default=20.0,
        help="fanout pacing: one append every N ms (0 = back-to-back, each still "
        "awaiting its response)",
    )
    p.add_argument("--appends", type=int, default=3000, help="timed appends (appends)")
    p.add_argument("--append-warmup", type=int, default=200, help="untimed warm-up appends")
    p.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or "/usr/bin/redis-server",
        help="redis-server executable",
    )
    p.add_argument(
        "--redis-appendfsync",
        choices=FSYNC_POLICIES,
        default="everysec",
        help="Redis's appendfsync (the append-only file is always on; RDB snapshots off)",
    )
    p.add_argument("--request-timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--scenario-timeout", type=float, default=300.0, help="per scenario, seconds")
    p.add_argument("--startup-timeout", type=float, default=30.0, help="server start, seconds")
    p.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="HTTP client for appends and SSE readers (see bench_streams.py)",
    )
    p.add_argument(
        "--tether-bin",
        default=str(harness.REPO_ROOT / ".venv" / "bin" / "tether"),
        help="tether executable",
    )
    p.add_argument(
        "--tether-extra-args",
        default="",
        help="extra arguments appended to every 'tether serve ...' (shell-quoted string)",
    )
    p.add_argument("--json", metavar="PATH", help="write raw figures as JSON to PATH")
    p.add_argument(
        "--markdown", action="store_true", help="also print a markdown section for RESULTS.md"
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="record a failing scenario and continue (exit status is still 1)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    p.add_argument("-v", "--verbose", action="store_true", help="print per-round figures")
    ns = p.parse_args(argv)

    scenarios = tuple(s.strip() for s in ns.scenarios.split(",") if s.strip())
    bad = [s for s in scenarios if s not in ALL_SCENARIOS]
    if bad or not scenarios:
        p.error(f"unknown scenario(s) {bad}; choose from {','.join(ALL_SCENARIOS)}")
    for name in ("rounds", "readers", "fanout_appends", "appends"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if ns.replicas < 2:
        p.error("--replicas must be >= 2 (the baseline is 1 replica)")
    if ns.append_warmup < 0 or ns.interval_ms < 0:
        p.error("--append-warmup and --interval-ms must be >= 0")

    # bench_streams' own defaults, with the knobs its scenarios read set from ours.
    streams = dataclasses.replace(
        bs.parse_args([])[0],
        targets=("tether",),
        scenarios=("appends", "fanout"),
        rounds=ns.rounds,
        appends=ns.appends,
        append_warmup=ns.append_warmup,
        fanout_readers=ns.readers,
        fanout_messages=ns.fanout_appends,
        fanout_interval_ms=ns.interval_ms,
        request_timeout_s=ns.request_timeout,
        scenario_timeout_s=ns.scenario_timeout,
        startup_timeout_s=ns.startup_timeout,
        client=ns.client,
        tether_bin=ns.tether_bin,
        tether_extra_args=tuple(shlex.split(ns.tether_extra_args)),
        keep_going=ns.keep_going,
        verbose=ns.verbose,
    )
    cfg = ScaleConfig(
        streams=streams,
        scenarios=tuple(s for s in ALL_SCENARIOS if s in scenarios),
        replicas=ns.replicas,
        redis_bin=ns.redis_server,
        redis_fsync=ns.redis_appendfsync,
        keep_going=ns.keep_going,
        verbose=ns.verbose,
    )
    return cfg, ns


def preflight(cfg: ScaleConfig) -> None:
    if not os.access(cfg.streams.tether_bin, os.X_OK):
        raise harness.BenchError(f"tether executable not found: {cfg.streams.tether_bin}")
    if not os.access(cfg.redis_bin, os.X_OK):
        raise harness.BenchError(
            f"redis-server not found: {cfg.redis_bin} (Debian/Ubuntu: apt-get install "
            "redis-server, or pass --redis-server)"
        )


# --------------------------------------------------------------------------- redis-server


#: redis-server as a measured server (shared with bench_streams.py's tether-redis target).
RedisProcess = bs.RedisProcess


async def redis_settings(server: RedisProcess) -> dict[str, str]:
    """What the running Redis says about itself, so the output shows its real config."""
    client = server.client()
    try:
        out: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "save", "maxmemory"):
            got = await client.config_get(name)
            out[name] = _text(got.get(name, ""))
        info = await client.info("server")
        out["redis_version"] = str(info.get("redis_version", ""))
        return out
    finally:
        await client.aclose()


async def redis_command_stats(server: RedisProcess, reset: bool) -> dict[str, dict[str, float]]:
    """INFO commandstats for REDIS_COMMANDS (calls, µs per call); reset afterwards if asked."""
    client = server.client()
    try:
        stats = await client.info("commandstats")
        if reset:
            await client.config_resetstat()
    finally:
        await client.aclose()
    out: dict[str, dict[str, float]] = {}
    for cmd in REDIS_COMMANDS:
        entry = stats.get(f"cmdstat_{cmd}")
        if isinstance(entry, dict):
            out[cmd] = {
                "calls": float(entry.get("calls", 0)),
                "usec_per_call": float(entry.get("usec_per_call", 0.0)),
            }
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- machine load


class LoadProbe:
    """CPU that processes other than ours used meanwhile (and hypervisor steal).

    The machine is small and shared: a test suite running beside the benchmark
    moves its p99s by 2-3x, so every session records how busy the rest was.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.t0 = time.perf_counter()
        self.machine0 = harness.machine_cpu()
        self.ours0 = time.process_time() + harness.cpu_seconds(self.pids)

    def figures(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        machine = harness.machine_cpu().since(self.machine0)
        ours = time.process_time() + harness.cpu_seconds(self.pids) - self.ours0
        return {
            "other_cpu_pct": max(0.0, 100.0 * (machine.busy - ours) / wall),
            "steal_pct": 100.0 * machine.steal / wall,
        }


# --------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """One target of one round: fresh tether process(es), one scenario."""

    scenario: str
    target: str
    replicas: int  # tether processes
    store: str  # "redis" or "sqlite"


def round_sessions(cfg: ScaleConfig, round_index: int) -> list[Session]:
    """The round's sessions; each pair's order swaps from one round to the next."""
    out: list[Session] = []
    if "fanout" in cfg.scenarios:
        one, many = cfg.fanout_targets
        pair = [Session("fanout", one, 1, "redis"), Session("fanout", many, cfg.replicas, "redis")]
        out += pair if round_index % 2 == 0 else pair[::-1]
    if "appends" in cfg.scenarios:
        red, sql = cfg.append_targets
        pair = [Session("appends", red, 1, "redis"), Session("appends", sql, 1, "sqlite")]
        out += pair if round_index % 2 == 0 else pair[::-1]
    return out


async def run_fanout(
    cfg: ScaleConfig, run: bs.TargetRun, servers: list[harness.ServerProcess]
) -> dict[str, Any]:
    """bench_streams' fan-out with reader i on servers[i % n]; the producer posts to
    servers[0]. Adds each replica's own latency percentiles, to see who is late."""
    url = run.stream_url("fanout")
    await bs.create_stream(run.session, url, run.cfg)
    path = url.removeprefix(servers[0].base_url)
    n = len(servers)
    reader_urls = [servers[i % n].base_url + path for i in range(cfg.streams.fanout_readers)]
    figures, readers = await bs.fanout(run, url, reader_urls, cfg.streams.fanout_interval_ms)
    by_replica = []
    for k, server in enumerate(servers):
        mine = readers[k::n]
        lat = sorted(x for r in mine for x in r.lat)
        by_replica.append(
            {
                "replica": k + 1,
                "port": server.port,
                "producer": k == 0,
                "readers": len(mine),
                "latency_p50_ms": harness.percentile(lat, 50) * 1e3,
                "latency_p99_ms": harness.percentile(lat, 99) * 1e3,
            }
        )
    figures["by_replica"] = by_replica
    return figures


async def run_session(
    cfg: ScaleConfig,
    session: Session,
    round_index: int,
    workroot: Path,
    redis_server: RedisProcess,
) -> dict[str, Any]:
    """Start the session's tether process(es), run its scenario, stop them."""
    store = redis_server.url() if session.store == "redis" else "sqlite"
    servers: list[harness.ServerProcess] = []
    for k in range(session.replicas):
        workdir = Path(
            tempfile.mkdtemp(prefix=f"{session.target}-r{round_index + 1}-{k + 1}-", dir=workroot)
        )
        servers.append(bs.build_server(cfg.streams, "tether", workdir, store=store))
    try:
        for server in servers:
            server.start()
        await asyncio.gather(*(s.wait_ready(cfg.streams.startup_timeout_s) for s in servers))
        extra: dict[str, Sequence[int]] = {
            f"replica{k + 1}": s.pids for k, s in enumerate(servers) if k
        }
        if session.store == "redis":
            extra["redis"] = redis_server.pids
            await redis_command_stats(redis_server, reset=True)
        probe = LoadProbe([p for s in [*servers, redis_server] for p in s.pids])
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, headers={"Accept-Encoding": "identity"}
        ) as http:
            run = bs.TargetRun(cfg.streams, servers[0], http, round_index, extra)
            try:
                async with asyncio.timeout(cfg.streams.scenario_timeout_s):
                    if session.scenario == "fanout":
                        figures = await run_fanout(cfg, run, servers)
                    else:
                        figures = await bs.scenario_appends(run)
            except (harness.BenchError, TimeoutError, aiohttp.ClientError, OSError) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                msg = f"{kind}: {exc}"
                for s in servers:
                    if s.proc is not None and s.proc.poll() is not None:
                        msg += f"\n--- tether on port {s.port} exited ({s.proc.returncode}):\n"
                        msg += s.log_tail()
                raise harness.BenchError(msg) from exc
        figures |= probe.figures()
        if session.store == "redis":
            figures["redis_commands"] = await redis_command_stats(redis_server, reset=False)
    finally:
        for server in servers:
            server.stop()
    figures["tether_cpu_pct"] = figures["server_cpu_pct"] + sum(
        figures.get(f"replica{k + 1}_cpu_pct", 0.0) for k in range(1, session.replicas)
    )
    figures["replicas"] = session.replicas
    figures["store"] = session.store
    figures["round"] = round_index + 1
    return figures


async def run_all(cfg: ScaleConfig, workroot: Path) -> dict[str, Any]:
    targets: list[str] = []
    if "fanout" in cfg.scenarios:
        targets += cfg.fanout_targets
    if "appends" in cfg.scenarios:
        targets += cfg.append_targets
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    errors: list[str] = []
    settings: dict[str, str] = {}
    redis_server = RedisProcess.build(cfg.redis_bin, cfg.redis_fsync, workroot / "redis")
    redis_server.start()
    try:
        await redis_server.wait_ready(cfg.streams.startup_timeout_s)
        settings = await redis_settings(redis_server)
        print(
            f"redis-server {settings['redis_version']} on port {redis_server.port}: "
            f"appendonly {settings['appendonly']}, appendfsync {settings['appendfsync']}, "
            f"save '{settings['save']}'",
            flush=True,
        )
        for round_index in range(cfg.streams.rounds):
            print(f"round {round_index + 1}/{cfg.streams.rounds}", flush=True)
            for session in round_sessions(cfg, round_index):
                t0 = time.perf_counter()
                try:
                    figures = await run_session(cfg, session, round_index, workroot, redis_server)
                except (harness.BenchError, RedisError) as exc:
                    where = f"{session.scenario} {session.target} round {round_index + 1}"
                    if not cfg.keep_going:
                        raise harness.BenchError(f"{where}: {exc}") from exc
                    errors.append(f"{where}: {exc}")
                    print(f"  FAILED {where}: {exc}", file=sys.stderr, flush=True)
                    continue
                results[session.target].append(figures)
                took = time.perf_counter() - t0
                note = ""
                if figures["other_cpu_pct"] > BUSY_WARNING_PCT:
                    note = f"; other processes busy: {figures['other_cpu_pct']:.0f}% of a core!"
                print(
                    f"  {session.scenario} {session.target}: {brief(figures)} ({took:.1f}s{note})"
                )
                if cfg.verbose:
                    for row in figures.get("by_replica", []):
                        print(f"    {replica_line(row)}")
                await asyncio.sleep(0.5)
    finally:
        redis_server.stop()
    return {"results": results, "errors": errors, "redis": settings}


def brief(figures: dict[str, Any]) -> str:
    if "latency_p99_ms" in figures:
        return (
            f"p50 {figures['latency_p50_ms']:.1f} ms, p99 {figures['latency_p99_ms']:.1f} ms, "
            f"{figures['deliveries_per_s']:,.0f} deliveries/s"
        )
    return (
        f"{figures['appends_per_s']:,.0f} appends/s, RTT p50 {figures['append_p50_ms']:.2f} ms, "
        f"p99 {figures['append_p99_ms']:.2f} ms"
    )


def replica_line(row: dict[str, Any]) -> str:
    role = " (producer posts here)" if row["producer"] else ""
    return (
        f"replica {row['replica']}{role}: {row['readers']} readers, "
        f"p50 {row['latency_p50_ms']:.1f} ms, p99 {row['latency_p99_ms']:.1f} ms"
    )


# --------------------------------------------------------------------------- figures


FANOUT_METRICS = (
    bs.Metric("fanout", "latency_p50_ms", "fan-out latency p50 (ms)", "{:.1f}", False),
    bs.Metric("fanout", "latency_p99_ms", "fan-out latency p99 (ms)", "{:.1f}", False),
    bs.Metric("fanout", "latency_max_ms", "fan-out latency max (ms)", "{:.1f}", False),
    bs.Metric("fanout", "deliveries_per_s", "deliveries/s", "{:,.0f}", True),
    bs.Metric("fanout", "tether_cpu_pct", "CPU: tether, all replicas (%)", "{:.0f}", False),
    bs.Metric("fanout", "redis_cpu_pct", "CPU: redis-server (%)", "{:.0f}", False),
    bs.Metric("fanout", "client_cpu_pct", "CPU: benchmark client (%)", "{:.0f}", False),
    bs.Metric("fanout", "other_cpu_pct", "CPU: other processes (%)", "{:.0f}", False),
)
APPEND_METRICS = (
    bs.Metric("appends", "appends_per_s", "appends/s (sequential, 1 conn)", "{:,.0f}", True),
    bs.Metric("appends", "append_p50_ms", "append RTT p50 (ms)", "{:.2f}", False),
    bs.Metric("appends", "append_p99_ms", "append RTT p99 (ms)", "{:.2f}", False),
    bs.Metric("appends", "tether_cpu_pct", "CPU: tether (%)", "{:.0f}", False),
    bs.Metric("appends", "redis_cpu_pct", "CPU: redis-server (%)", "{:.0f}", False),
    bs.Metric("appends", "client_cpu_pct", "CPU: benchmark client (%)", "{:.0f}", False),
    bs.Metric("appends", "other_cpu_pct", "CPU: other processes (%)", "{:.0f}", False),
)


def summarize(
    cfg: ScaleConfig, results: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, dict[str, float]]]:
    """target -> metric key -> {median, min, max, n} over rounds."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for target, rounds in results.items():
        metrics = FANOUT_METRICS if target in cfg.fanout_targets else APPEND_METRICS
        out: dict[str, dict[str, float]] = {}
        for m in metrics:
            values = [r[m.key] for r in rounds if m.key in r]
            if values:
                out[m.key] = harness.over_rounds(values)
        if target == cfg.fanout_targets[1]:  # latency by replica of the scale-out target
            for k in range(cfg.replicas):
                for q in ("latency_p50_ms", "latency_p99_ms"):
                    values = [r["by_replica"][k][q] for r in rounds]
                    if values:
                        out[f"replica{k + 1}.{q}"] = harness.over_rounds(values)
        for cmd in REDIS_COMMANDS:
            values = [
                r["redis_commands"][cmd]["usec_per_call"]
                for r in rounds
                if cmd in r.get("redis_commands", {})
            ]
            if values:
                out[f"redis.{cmd}_usec_per_call"] = harness.over_rounds(values)
        summary[target] = out
    return summary


def paired_ratios(
    results: dict[str, list[dict[str, Any]]], num: str, den: str, key: str
) -> list[float]:
    """num/den of `key` round by round (both ran in the same round)."""
    by_round = {r["round"]: r[key] for r in results.get(den, []) if r.get(key)}
    return [r[key] / by_round[r["round"]] for r in results.get(num, []) if r["round"] in by_round]


def table(
    summary: dict[str, dict[str, dict[str, float]]],
    metrics: Sequence[bs.Metric],
    base: str,
    other: str,
) -> tuple[list[str], list[list[str]]]:
    header = ["metric", base, other, f"{other}/{base}"]
    rows: list[list[str]] = []
    for m in metrics:
        row = [m.label + ("" if m.higher_is_better else " ↓")]
        cells = [summary.get(t, {}).get(m.key) for t in (base, other)]
        row += ["-" if c is None else m.fmt.format(c["median"]) for c in cells]
        a, b = cells
        if a is None or b is None or not a["median"]:
            row.append("-")
        else:
            row.append(f"{b['median'] / a['median']:.2f}x")
        rows.append(row)
    return header, rows


def tables(
    cfg: ScaleConfig, summary: dict[str, dict[str, dict[str, float]]]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per scenario that ran."""
    out = []
    if "fanout" in cfg.scenarios:
        one, many = cfg.fanout_targets
        s = cfg.streams
        title = (
            f"fan-out: {s.fanout_readers} SSE readers, {s.fanout_messages} appends "
            f"{s.fanout_interval_ms:g} ms apart; {one} vs {many} on one Redis"
        )
        out.append((title, *table(summary, FANOUT_METRICS, one, many)))
    if "appends" in cfg.scenarios:
        red, sql = cfg.append_targets
        title = f"appends: {cfg.streams.appends:,} sequential appends, --store redis vs sqlite"
        out.append((title, *table(summary, APPEND_METRICS, sql, red)))
    return out


def detail_lines(cfg: ScaleConfig, summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Where the time goes: latency per replica, Redis's own cost per command."""
    lines = []
    many = summary.get(cfg.fanout_targets[1], {})
    if "replica1.latency_p99_ms" in many:
        parts = []
        for k in range(cfg.replicas):
            p50 = many.get(f"replica{k + 1}.latency_p50_ms")
            p99 = many.get(f"replica{k + 1}.latency_p99_ms")
            if p50 and p99:
                who = " (the producer's)" if k == 0 else ""
                parts.append(
                    f"replica {k + 1}{who} p50 {p50['median']:.1f} / p99 {p99['median']:.1f} ms"
                )
        lines.append(f"{cfg.fanout_targets[1]} latency by replica: " + "; ".join(parts))
    for target, entry in summary.items():
        parts = [
            f"{cmd} {entry[f'redis.{cmd}_usec_per_call']['median']:.1f}"
            for cmd in REDIS_COMMANDS
            if f"redis.{cmd}_usec_per_call" in entry
        ]
        if parts:
            scenario = "fan-out" if target in cfg.fanout_targets else "appends"
            lines.append(f"Redis µs per call ({scenario}, {target}): " + ", ".join(parts))
    return lines


def busy_warnings(cfg: ScaleConfig, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Sessions during which other processes were busy enough to skew the figures."""
    out = []
    for target, rounds in results.items():
        scenario = "fan-out" if target in cfg.fanout_targets else "appends"
        for r in rounds:
            if r.get("other_cpu_pct", 0.0) > BUSY_WARNING_PCT:
                out.append(
                    f"{scenario} {target} round {r['round']}: other processes used "
                    f"{r['other_cpu_pct']:.0f}% of a core (steal {r.get('steal_pct', 0.0):.0f}%)"
                )
    return out


def goals(
    cfg: ScaleConfig,
    summary: dict[str, dict[str, dict[str, float]]],
    results: dict[str, list[dict[str, Any]]],
) -> list[tuple[str, str, bool]]:
    """(goal, figures, met) for the two scale-out goals, on medians over rounds."""
    out = []

    def med(target: str, key: str) -> float | None:
        entry = summary.get(target, {}).get(key)
        return None if entry is None else entry["median"]

    one, many = cfg.fanout_targets
    a, b = med(one, "latency_p99_ms"), med(many, "latency_p99_ms")
    if a and b is not None:
        per_round = paired_ratios(results, many, one, "latency_p99_ms")
        out.append(
            (
                f"fan-out p99, {many} / {one} <= {MAX_P99_RATIO:g}x",
                f"{b:.1f} vs {a:.1f} ms = {b / a:.2f}x; per round "
                + ", ".join(f"{x:.2f}x" for x in per_round),
                b / a <= MAX_P99_RATIO,
            )
        )
    red, sql = cfg.append_targets
    a, b = med(sql, "appends_per_s"), med(red, "appends_per_s")
    if a and b is not None:
        per_round = paired_ratios(results, red, sql, "appends_per_s")
        out.append(
            (
                f"appends/s, redis / sqlite >= {MIN_APPEND_RATIO:g}x",
                f"{b:,.0f} vs {a:,.0f} = {b / a:.2f}x; per round "
                + ", ".join(f"{x:.2f}x" for x in per_round),
                b / a >= MIN_APPEND_RATIO,
            )
        )
    return out


# --------------------------------------------------------------------------- output


def split(readers: int, replicas: int) -> str:
    """How many readers each replica gets, e.g. '100/100/100'."""
    return "/".join(str(len(range(k, readers, replicas))) for k in range(replicas))


def render_markdown(
    cfg: ScaleConfig,
    info: dict[str, Any],
    redis_cfg: dict[str, str],
    started: dt.datetime,
    command: str,
    loop_name: str,
    sections: list[tuple[str, list[str], list[list[str]]]],
    details: list[str],
    busy: list[str],
    goal_rows: list[tuple[str, str, bool]],
    errors: list[str],
) -> str:
    s = cfg.streams
    one, many = cfg.fanout_targets
    lines = [
        f"## {started.strftime('%Y-%m-%d %H:%M UTC')}: Redis scale-out, {one} vs {many}; "
        "appends on Redis vs SQLite",
        "",
        f"- Machine: {info['nproc']} CPU(s), {info['cpu_model']}, {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}; client, Redis and every tether process share it"
        + (f"; data directories in {info['data_dirs']}." if info["data_dirs"] else "."),
        f"- Software: Python {info['python']} (benchmark client: {s.client} HTTP/1.1, "
        f"{loop_name}), redis-server {redis_cfg.get('redis_version', '?')}, redis-py "
        f"{info['redis_py']}"
        + (f", tether commit {info['git_commit']}" if info["git_commit"] else ""),
        f"- Redis: started by the benchmark on 127.0.0.1, `appendonly "
        f"{redis_cfg.get('appendonly', '?')}`, `appendfsync {redis_cfg.get('appendfsync', '?')}`, "
        f'`save "{redis_cfg.get("save", "")}"` (no RDB snapshots); one Redis for the whole '
        "run, fresh tether processes (`tether serve --store redis://127.0.0.1:PORT/0`) for "
        "every target of every round.",
        f"- Command: `{command}`",
        f"- Medians over {s.rounds} round(s); the two targets of each scenario alternate "
        "within a round, their order swapped every round; ↓ = lower is better.",
    ]
    if "fanout" in cfg.scenarios:
        lines.append(
            f"- fan-out: one JSON stream, {s.fanout_readers} SSE readers "
            f"(`offset=-1&live=sse`), {s.fanout_messages} appends paced one every "
            f"{s.fanout_interval_ms:g} ms, each carrying its send time. {one}: one tether "
            f"process serves every reader and the producer. {many}: {cfg.replicas} tether "
            f"processes on the same Redis, reader i on replica 1 + (i mod {cfg.replicas}) "
            f"(readers {split(s.fanout_readers, cfg.replicas)}), the producer posting to "
            "replica 1. Latency = append sent -> chunk read by a reader; "
            "deliveries/s = deliveries / (first append sent -> last delivery); every reader "
            "must get every message, in order."
        )
    if "appends" in cfg.scenarios:
        lines.append(
            f"- appends: {s.appends:,} sequential ~{bs.MESSAGE_SIZE}-byte JSON appends on one "
            f"keep-alive connection after {s.append_warmup} warm-up appends; `--store redis://` "
            "vs `--store sqlite` (fresh data directory, WAL, synchronous=NORMAL)."
        )
    for title, header, rows in sections:
        lines += ["", f"{title}:", "", harness.format_markdown_table(header, rows)]
    if details:
        lines += [
            "",
            "Where the time goes (medians over rounds; Redis figures from INFO commandstats, "
            "fcall = a whole Lua function, the xadd and publish inside it included):",
            "",
        ]
        lines += [f"- {line}" for line in details]
    if busy:
        lines += ["", "Other work on the machine during these sessions (figures suspect):", ""]
        lines += [f"- {line}" for line in busy]
    if goal_rows:
        lines += ["", "Goals:", ""]
        lines += [
            f"- {'met' if met else '**missed**'}: {desc} ({figures})"
            for desc, figures, met in goal_rows
        ]
    if errors:
        lines += ["", "Failures:", ""]
        lines += [f"- `{e.splitlines()[0]}`" for e in errors]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, ns = parse_args(argv)
    preflight(cfg)
    harness.raise_nofile(max(cfg.streams.fanout_readers * 2 + 512, 4096))

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = dt.datetime.now(dt.UTC)
    info = bs.machine_info(cfg.streams)
    for key in ("node", "reference_server"):
        info.pop(key, None)
    info["redis_py"] = redis.__version__
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["redis_server"] = subprocess.run(
            [cfg.redis_bin, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    loop_factory, loop_name = harness.client_loop(ns.no_uvloop)
    print(
        f"scenarios={','.join(cfg.scenarios)} rounds={cfg.streams.rounds} "
        f"replicas={cfg.replicas} readers={cfg.streams.fanout_readers} client loop={loop_name}",
        flush=True,
    )
    workroot = Path(tempfile.mkdtemp(prefix="tether-scaleout-"))
    ok = False
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            outcome = runner.run(run_all(cfg, workroot))
        ok = not outcome["errors"]
    finally:
        harness.kill_all_servers()
        harness.cleanup_workroot(workroot, keep_logs=not ok)
    finished = dt.datetime.now(dt.UTC)

    results: dict[str, list[dict[str, Any]]] = outcome["results"]
    errors: list[str] = outcome["errors"]
    redis_cfg: dict[str, str] = outcome["redis"]
    summary = summarize(cfg, results)
    sections = tables(cfg, summary)
    details = detail_lines(cfg, summary)
    goal_rows = goals(cfg, summary, results)
    busy = busy_warnings(cfg, results)

    print()
    print(
        f"redis-server {redis_cfg.get('redis_version', '?')}: appendonly "
        f"{redis_cfg.get('appendonly')}, appendfsync {redis_cfg.get('appendfsync')}, "
        f"save '{redis_cfg.get('save')}'; medians over {cfg.streams.rounds} round(s); "
        "↓ = lower is better; CPU in % of one core"
    )
    for title, header, rows in sections:
        print(f"\n{title}")
        print(harness.format_text_table(header, rows))
    if details:
        print()
        for line in details:
            print(line)
    if busy:
        print(
            f"\nwarning: the machine was busy with other work (> {BUSY_WARNING_PCT:g}% of a core):"
        )
        for line in busy:
            print("  " + line)
    if goal_rows:
        print("\nscale-out goals:")
        for desc, figures, met in goal_rows:
            print(f"  [{'met ' if met else 'MISS'}] {desc}: {figures}")
    if errors:
        print(f"\n{len(errors)} failure(s):", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)

    command = harness.command_line()
    if ns.json:
        settings = {k: v for k, v in vars(cfg.streams).items() if k in JSON_SETTINGS}
        settings |= {
            "scenarios": cfg.scenarios,
            "replicas": cfg.replicas,
            "redis_server": cfg.redis_bin,
            "redis_appendfsync": cfg.redis_fsync,
        }
        doc = {
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "command": command,
            "client_loop": loop_name,
            "machine": info,
            "redis": redis_cfg,
            "config": settings,
            "summary": summary,
            "results": results,
            "goals": [{"goal": d, "figures": f, "met": m} for d, f, m in goal_rows],
            "busy_warnings": busy,
            "errors": errors,
        }
        Path(ns.json).write_text(json.dumps(doc, indent=2, default=list) + "\n")
        print(f"\nraw figures written to {ns.json}")
    if ns.markdown:
        print()
        print(
            render_markdown(
                cfg,
                info,
                redis_cfg,
                started,
                command,
                loop_name,
                sections,
                details,
                busy,
                goal_rows,
                errors,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except harness.BenchError as exc:
        harness.kill_all_servers()
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        harness.kill_all_servers()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
