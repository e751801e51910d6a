#!/usr/bin/env python3
"""Benchmark tether's Durable Streams server against the Node reference server.

Starts every target server itself (as a child process on a free 127.0.0.1 port,
with a fresh data directory), runs the same scenarios against each, alternating
targets round by round (tether, ref-memory, ref-file, tether, ...), and reports
the median over rounds for each target together with the ratio tether/reference.

Targets:
  tether      .venv/bin/tether serve --host 127.0.0.1 --port P --data-dir D --store sqlite
  ref-memory  @durable-streams/server 0.3.7 (benchmarks/reference), in-memory store
  ref-file    @durable-streams/server 0.3.7, file-backed store (LMDB + segment files)
  tether-redis  tether serve --store redis://... on a fresh redis-server of its own
              (append-only file fsynced every second); not in the default targets
  tether-base, tether-redis-base  the same, run by --baseline-bin (another build of
              tether, e.g. main's): a before/after comparison in one run, alternating
  floor-uvicorn  uvicorn with uvloop and httptools serving benchmarks/floor_app.py, an
              app that answers creates and appends without storing anything: the
              floor of tether's HTTP stack (append scenarios only)
  floor-httptools  httptools on uvloop answering from constants, no ASGI
              (benchmarks/floor_httptools.py): the floor of any Python HTTP layer
  floor-redis  tether on the memory store, each append followed by one bare round trip
              (PING) to a redis-server of its own (benchmarks/floor_redis.py): the
              floor of the Redis store's appends, which wait for Redis's answer

Scenarios (all on application/json streams, messages of ~100 bytes):
  appends   sequential POSTs on one keep-alive connection -> appends/s, RTT p50/p99
  fanout    N SSE readers on one stream, M paced appends -> delivery latency
            p50/p99 (append sent -> reader received) and deliveries/s
  fanout-burst  the same with back-to-back appends
  catchup   read K messages from offset -1 following Stream-Next-Offset until
            Stream-Up-To-Date -> messages/s
  idle      server RSS growth per idle SSE reader (KiB), 1,000 readers
  producers-64  64 producers appending at once, each on its own keep-alive connection
            to a stream of its own -> total appends/s, append RTT p50/p99
  producers-64-one-stream  the same, all 64 on one stream
  fanout-wide  10,000 SSE readers on one stream, a few appends one a second ->
            delivery p99 to the last reader, the append's own latency, deliveries/s
  stalled   100 SSE readers that stop reading while 50,000 messages are
            appended -> server RSS growth, and how many stalled readers it cut off

See benchmarks/README.md for how to run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from harness import (
    HOST,
    REPO_ROOT,
    BenchError,
    ServerProcess,
    cleanup_workroot,
    client_loop,
    command_line,
    cpu_seconds,
    format_markdown_table,
    format_text_table,
    free_port,
    kill_all_servers,
    over_rounds,
    percentile,
    raise_nofile,
    rss_kib,
)
from harness import machine_info as base_machine_info

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - orjson is a project dependency

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


REF_DIR = REPO_ROOT / "benchmarks" / "reference"
REF_VERSION = "0.3.7"
JSON_CT = "application/json"
ALL_TARGETS = (
    "tether", "ref-memory", "ref-file", "tether-redis", "tether-base", "tether-redis-base",
    "floor-uvicorn", "floor-httptools", "floor-redis",
)  # fmt: skip
#: Each build under comparison, and its baseline (run by --baseline-bin).
BASELINES = {"tether": "tether-base", "tether-redis": "tether-redis-base"}
DEFAULT_TARGETS = ("tether", "ref-memory", "ref-file")
REF_TARGETS = ("ref-memory", "ref-file")
ALL_SCENARIOS = (
    "appends", "fanout", "fanout-burst", "catchup", "idle",
    "producers-64", "producers-64-one-stream", "fanout-wide", "stalled",
)  # fmt: skip
APPEND_OK = (200, 204)
CREATE_OK = (200, 201, 204)
MESSAGE_SIZE = 100


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    targets: tuple[str, ...]
    scenarios: tuple[str, ...]
    rounds: int
    appends: int
    append_warmup: int
    fanout_readers: int
    fanout_messages: int
    fanout_interval_ms: float
    catchup_messages: int
    catchup_repeats: int
    catchup_populate_concurrency: int
    catchup_batch: int
    accept_encoding: str
    idle_readers: int
    idle_settle_s: float
    wide_readers: int
    wide_messages: int
    wide_interval_ms: float
    stalled_readers: int
    stalled_messages: int
    open_concurrency: int
    request_timeout_s: float
    scenario_timeout_s: float
    startup_timeout_s: float
    client: str
    tether_bin: str
    tether_extra_args: tuple[str, ...]
    node_bin: str
    keep_going: bool
    verbose: bool
    producers: int = 64
    producer_appends: int = 200
    producer_warmup: int = 20
    redis_bin: str = "redis-server"
    baseline_bin: str | None = None


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description="Benchmark tether vs the Durable Streams reference server "
        f"(@durable-streams/server {REF_VERSION}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)}",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every target once")
    p.add_argument("--appends", type=int, default=3000, help="timed appends (scenario appends)")
    p.add_argument("--append-warmup", type=int, default=200, help="untimed warm-up appends")
    p.add_argument("--fanout-readers", type=int, default=100, help="SSE readers (fanout)")
    p.add_argument("--fanout-messages", type=int, default=300, help="appends (fanout)")
    p.add_argument(
        "--fanout-interval-ms",
        type=float,
        default=5.0,
        help="append pacing for fanout: one append every N ms (0 = back-to-back, "
        "each append still awaits its response)",
    )
    p.add_argument("--catchup-messages", type=int, default=20000, help="messages (catchup)")
    p.add_argument("--catchup-repeats", type=int, default=5, help="timed full reads per round")
    p.add_argument(
        "--catchup-populate-concurrency",
        type=int,
        default=8,
        help="concurrent writers used to fill the catch-up stream (untimed)",
    )
    p.add_argument(
        "--catchup-batch",
        type=int,
        default=1,
        help="messages per POST when filling the catch-up stream (>1 posts JSON arrays, "
        "which the server flattens; 1 = one message per POST, like real appends)",
    )
    p.add_argument(
        "--accept-encoding",
        default="identity",
        help="Accept-Encoding sent on every request (the reference gzips bodies >= 1 KiB "
        "when asked; 'identity' measures uncompressed serving on loopback)",
    )
    p.add_argument("--idle-readers", type=int, default=1000, help="idle SSE readers (idle)")
    p.add_argument("--producers", type=int, default=64, help="concurrent producers (producers-64*)")
    p.add_argument("--producer-appends", type=int, default=200, help="timed appends per producer")
    p.add_argument("--producer-warmup", type=int, default=20, help="untimed appends per producer")
    p.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or "redis-server",
        help="redis-server executable (targets tether-redis and floor-redis)",
    )
    p.add_argument("--idle-settle", type=float, default=1.0, help="seconds to settle before RSS")
    p.add_argument("--wide-readers", type=int, default=10000, help="SSE readers (fanout-wide)")
    p.add_argument("--wide-messages", type=int, default=10, help="appends (fanout-wide)")
    p.add_argument(
        "--wide-interval-ms",
        type=float,
        default=1000.0,
        help="fanout-wide: one append every N ms, sent whether or not the readers have "
        "the previous one (each append still awaits its own response)",
    )
    p.add_argument("--stalled-readers", type=int, default=100, help="readers that stop (stalled)")
    p.add_argument("--stalled-messages", type=int, default=50000, help="appends (stalled)")
    p.add_argument(
        "--open-concurrency", type=int, default=64, help="max SSE connections opening at once"
    )
    p.add_argument("--request-timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--scenario-timeout", type=float, default=300.0, help="per scenario, seconds")
    p.add_argument("--startup-timeout", type=float, default=30.0, help="server start, seconds")
    p.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="HTTP client for the hot paths (timed appends, SSE readers): a minimal "
        "HTTP/1.1 client on asyncio, or aiohttp (setup and catch-up always use aiohttp)",
    )
    p.add_argument(
        "--tether-bin",
        default=str(REPO_ROOT / ".venv" / "bin" / "tether"),
        help="tether executable",
    )
    p.add_argument(
        "--baseline-bin",
        help="tether executable for the targets tether-base and tether-redis-base (the "
        "build to compare against, run alternately with --tether-bin's in the same run)",
    )
    p.add_argument(
        "--tether-extra-args",
        default="",
        help="extra arguments appended to 'tether serve ...' (shell-quoted string)",
    )
    p.add_argument("--node", default=shutil.which("node") or "node", help="node executable")
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

    targets = tuple(t.strip() for t in ns.targets.split(",") if t.strip())
    scenarios = tuple(s.strip() for s in ns.scenarios.split(",") if s.strip())
    bad = [t for t in targets if t not in ALL_TARGETS]
    if bad or not targets:
        p.error(f"unknown target(s) {bad}; choose from {','.join(ALL_TARGETS)}")
    bad = [s for s in scenarios if s not in ALL_SCENARIOS]
    if bad or not scenarios:
        p.error(f"unknown scenario(s) {bad}; choose from {','.join(ALL_SCENARIOS)}")
    floor_only = ("appends", "producers-64", "producers-64-one-stream")
    for floor in ("floor-uvicorn", "floor-httptools"):
        if floor in targets and (bad := [s for s in scenarios if s not in floor_only]):
            p.error(f"{floor} stores nothing: it runs only {','.join(floor_only)}, not {bad}")
    positive = {
        "--rounds": ns.rounds,
        "--appends": ns.appends,
        "--fanout-readers": ns.fanout_readers,
        "--fanout-messages": ns.fanout_messages,
        "--catchup-messages": ns.catchup_messages,
        "--catchup-repeats": ns.catchup_repeats,
        "--catchup-populate-concurrency": ns.catchup_populate_concurrency,
        "--catchup-batch": ns.catchup_batch,
        "--idle-readers": ns.idle_readers,
        "--producers": ns.producers,
        "--producer-appends": ns.producer_appends,
        "--wide-readers": ns.wide_readers,
        "--wide-messages": ns.wide_messages,
        "--stalled-readers": ns.stalled_readers,
        "--stalled-messages": ns.stalled_messages,
        "--open-concurrency": ns.open_concurrency,
    }
    for name, value in positive.items():
        if value < 1:
            p.error(f"{name} must be >= 1")
    if ns.append_warmup < 0 or ns.fanout_interval_ms < 0 or ns.idle_settle < 0:
        p.error("--append-warmup, --fanout-interval-ms and --idle-settle must be >= 0")
    if ns.wide_interval_ms < 0:
        p.error("--wide-interval-ms must be >= 0")
    if any(t.endswith("-base") for t in targets) and not ns.baseline_bin:
        p.error("the targets tether-base and tether-redis-base need --baseline-bin")

    cfg = Config(
        targets=tuple(dict.fromkeys(targets)),
        scenarios=tuple(s for s in ALL_SCENARIOS if s in scenarios),
        rounds=ns.rounds,
        appends=ns.appends,
        append_warmup=ns.append_warmup,
        fanout_readers=ns.fanout_readers,
        fanout_messages=ns.fanout_messages,
        fanout_interval_ms=ns.fanout_interval_ms,
        catchup_messages=ns.catchup_messages,
        catchup_repeats=ns.catchup_repeats,
        catchup_populate_concurrency=ns.catchup_populate_concurrency,
        catchup_batch=ns.catchup_batch,
        accept_encoding=ns.accept_encoding,
        idle_readers=ns.idle_readers,
        idle_settle_s=ns.idle_settle,
        wide_readers=ns.wide_readers,
        wide_messages=ns.wide_messages,
        wide_interval_ms=ns.wide_interval_ms,
        stalled_readers=ns.stalled_readers,
        stalled_messages=ns.stalled_messages,
        open_concurrency=ns.open_concurrency,
        request_timeout_s=ns.request_timeout,
        scenario_timeout_s=ns.scenario_timeout,
        startup_timeout_s=ns.startup_timeout,
        client=ns.client,
        tether_bin=ns.tether_bin,
        tether_extra_args=tuple(shlex.split(ns.tether_extra_args)),
        node_bin=ns.node,
        keep_going=ns.keep_going,
        verbose=ns.verbose,
        producers=ns.producers,
        producer_appends=ns.producer_appends,
        producer_warmup=max(0, ns.producer_warmup),
        redis_bin=ns.redis_server,
        baseline_bin=ns.baseline_bin,
    )
    return cfg, ns


# --------------------------------------------------------------------------- servers


def build_server(cfg: Config, target: str, workdir: Path, store: str = "sqlite") -> ServerProcess:
    """A (not yet started) server for `target`; `store` is tether's --store."""
    port = free_port()
    if target == "floor-uvicorn":
        argv = [
            sys.executable, "-m", "uvicorn", "floor_app:app", "--host", HOST, "--port",
            str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        return ServerProcess(target, argv, port, workdir, Path(__file__).parent)
    if target == "floor-httptools":
        argv = [sys.executable, "floor_httptools.py", "--host", HOST, "--port", str(port)]
        return ServerProcess(target, argv, port, workdir, Path(__file__).parent)
    if target == "floor-redis":  # (`store`: its Redis's URL)
        argv = [
            sys.executable, str(Path(__file__).parent / "floor_redis.py"), store, "serve",
            "--host", HOST, "--port", str(port), "--data-dir", str(workdir), "--store", "memory",
            *cfg.tether_extra_args,
        ]  # fmt: skip
        return ServerProcess(target, argv, port, workdir, REPO_ROOT)
    if target in ("tether", "tether-base"):
        data_dir = workdir / "data"
        data_dir.mkdir()
        argv = [
            cfg.baseline_bin if target == "tether-base" and cfg.baseline_bin else cfg.tether_bin,
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--store",
            store,
            *cfg.tether_extra_args,
        ]
        return ServerProcess(target, argv, port, workdir, REPO_ROOT)
    argv = [cfg.node_bin, str(REF_DIR / "serve.mjs"), "--host", HOST, "--port", str(port)]
    if target == "ref-file":
        data_dir = workdir / "data"
        data_dir.mkdir()
        argv += ["--data-dir", str(data_dir)]
    # The reference server has no health route: any answer means it is up.
    probe = f"/v1/stream/__bench_probe_{uuid.uuid4().hex}"
    return ServerProcess(
        target, argv, port, workdir, REF_DIR, health_path=probe, health_status=None
    )


@dataclass(eq=False)
class RedisProcess(ServerProcess):
    """redis-server as a measured server: the harness's start, stop and cleanup; ready on PING."""

    @classmethod
    def build(cls, redis_bin: str, fsync: str, workdir: Path) -> RedisProcess:
        """A redis-server in ``workdir``, append-only file fsynced by policy ``fsync``."""
        data_dir = workdir / "redis-data"
        data_dir.mkdir(parents=True)
        port = free_port()
        argv = [
            redis_bin,
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", fsync,
            "--logfile", "",
        ]  # fmt: skip
        return cls("redis", argv, port, workdir, workdir)

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(host=HOST, port=self.port, socket_timeout=5.0)

    async def healthy(self) -> bool:
        """PING answers (not while Redis loads its data)."""
        client = self.client()
        try:
            return bool(await client.ping())
        except RedisError:
            return False
        finally:
            await client.aclose()


def preflight(cfg: Config) -> None:
    tethers = [t for t in cfg.targets if t.startswith("tether")]
    if tethers and not os.access(cfg.tether_bin, os.X_OK):
        raise BenchError(f"tether executable not found: {cfg.tether_bin}")
    if cfg.baseline_bin and not os.access(cfg.baseline_bin, os.X_OK):
        raise BenchError(f"baseline executable not found: {cfg.baseline_bin}")
    redis_targets = [t for t in cfg.targets if t.startswith(("tether-redis", "floor-redis"))]
    if redis_targets and shutil.which(cfg.redis_bin) is None:
        raise BenchError(f"redis-server not found: {cfg.redis_bin} (pass --redis-server)")
    if any(t in REF_TARGETS for t in cfg.targets):
        pkg = REF_DIR / "node_modules" / "@durable-streams" / "server" / "package.json"
        if not pkg.exists():
            raise BenchError(f"reference server not installed; run: (cd {REF_DIR} && npm ci)")
        version = json.loads(pkg.read_text()).get("version")
        if version != REF_VERSION:
            raise BenchError(f"reference server is {version}, expected {REF_VERSION}; npm ci")
        if shutil.which(cfg.node_bin) is None:
            raise BenchError(f"node not found: {cfg.node_bin}")


# --------------------------------------------------------------------------- HTTP helpers


def make_message(seq: int, ts: float) -> bytes:
    """A ~100-byte JSON object carrying a sequence number and a send timestamp."""
    base = _dumps({"seq": seq, "ts": ts, "pad": ""})
    pad = max(0, MESSAGE_SIZE - len(base))
    return _dumps({"seq": seq, "ts": ts, "pad": "x" * pad})


def request_timeout(cfg: Config) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=cfg.request_timeout_s)


def sse_timeout(cfg: Config) -> aiohttp.ClientTimeout:
    # Live responses have no total deadline; scenario-level timeouts bound them.
    return aiohttp.ClientTimeout(total=None, sock_connect=cfg.request_timeout_s)


async def create_stream(session: aiohttp.ClientSession, url: str, cfg: Config) -> None:
    async with session.put(
        url, headers={"Content-Type": JSON_CT}, timeout=request_timeout(cfg)
    ) as resp:
        body = await resp.read()
        if resp.status not in CREATE_OK:
            raise BenchError(f"PUT {url} -> {resp.status}: {body[:200]!r}")


async def append(session: aiohttp.ClientSession, url: str, body: bytes, cfg: Config) -> str | None:
    async with session.post(
        url, data=body, headers={"Content-Type": JSON_CT}, timeout=request_timeout(cfg)
    ) as resp:
        text = await resp.read()
        if resp.status not in APPEND_OK:
            raise BenchError(f"POST {url} -> {resp.status}: {text[:200]!r}")
        return resp.headers.get("Stream-Next-Offset")


class SseReader:
    """Minimal SSE parser on raw bytes for Durable Streams JSON streams.

    Records, for each delivered message, its `seq` and the latency between the
    `ts` it carries (perf_counter at send time, same process) and the time the
    chunk holding it was read from the socket.
    """

    __slots__ = ("buf", "done", "error", "expected", "last_recv", "lat", "ready", "seqs")

    def __init__(self, expected: int) -> None:
        self.buf = b""
        self.seqs: list[int] = []
        self.lat: list[float] = []
        self.last_recv = 0.0
        self.expected = expected
        self.ready = asyncio.Event()  # first control event seen
        self.done = asyncio.Event()  # expected messages seen (or failure)
        self.error: str | None = None

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.ready.set()
        self.done.set()

    def feed(self, chunk: bytes, now: float) -> None:
        buf = self.buf + chunk if self.buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self._event(buf[start:end], now)
            start = end + 2
        self.buf = buf[start:]

    def _event(self, block: bytes, now: float) -> None:
        event = b"message"
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            elif line.startswith(b"event:"):
                event = line[6:].strip()
        if not data:
            return
        if event == b"data":
            payload = _loads(b"\n".join(data))
            items = payload if isinstance(payload, list) else [payload]
            seqs = self.seqs
            lat = self.lat
            for item in items:
                seqs.append(item["seq"])
                lat.append(now - item["ts"])
            self.last_recv = now
            if self.expected and len(seqs) >= self.expected:
                self.done.set()
        elif event == b"control":
            self.ready.set()


async def sse_read(
    session: aiohttp.ClientSession, url: str, offset: str, reader: SseReader, cfg: Config
) -> None:
    try:
        async with session.get(
            url,
            params={"offset": offset, "live": "sse"},
            headers={"Accept": "text/event-stream"},
            timeout=sse_timeout(cfg),
        ) as resp:
            if resp.status != 200:
                body = await resp.read()
                reader.fail(f"SSE GET -> {resp.status}: {body[:200]!r}")
                return
            content = resp.content
            perf = time.perf_counter
            while not reader.done.is_set():
                chunk = await content.readany()
                if not chunk:
                    reader.fail(f"SSE stream ended early after {len(reader.seqs)} messages")
                    return
                reader.feed(chunk, perf())
    except asyncio.CancelledError:
        raise
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
        reader.fail(f"SSE reader error: {type(exc).__name__}: {exc}")


async def stop_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def first_error(readers: Sequence[SseReader]) -> str | None:
    errors = [r.error for r in readers if r.error]
    if not errors:
        return None
    return f"{len(errors)} reader(s) failed; first: {errors[0]}"


# --------------------------------------------------------------------------- raw HTTP/1.1
#
# aiohttp costs ~150-200 us of client CPU per request, which on a small machine
# shared with the server caps sequential appends well below what the servers can
# do. The hot paths (the timed append loops and the SSE readers) therefore use
# this minimal HTTP/1.1 client by default (--client raw); --client aiohttp uses
# aiohttp everywhere.


class RawHttpConnection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or HOST
        self.port = parts.port or 80
        self.path = parts.path
        self.timeout_s = timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.prefix = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {JSON_CT}\r\nAccept-Encoding: identity\r\nContent-Length: "
        ).encode()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 20
        )
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def append(self, body: bytes) -> None:
        async with asyncio.timeout(self.timeout_s):
            status, close, payload = await self._exchange(
                self.prefix + str(len(body)).encode() + b"\r\n\r\n" + body
            )
        if close:
            self.close()
        if status not in APPEND_OK:
            raise BenchError(f"POST {self.path} -> {status}: {payload[:200]!r}")

    async def _exchange(self, request: bytes) -> tuple[int, bool, bytes]:
        if self.writer is None or self.reader is None:
            reader, writer = await self.connect()
        else:
            reader, writer = self.reader, self.writer
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked = False
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if status in (204, 304) or 100 <= status < 200:
            return status, close, b""
        if chunked:
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                parts.append((await reader.readexactly(size + 2))[:-2])
            return status, close, b"".join(parts)
        if length >= 0:
            return status, close, await reader.readexactly(length)
        return status, True, await reader.read()  # delimited by connection close


class RawSseProtocol(asyncio.Protocol):
    """SSE over a raw connection: de-chunks and parses in data_received."""

    def __init__(self, request: bytes, reader: SseReader) -> None:
        self.request = request
        self.reader = reader
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.pending = b""  # partial chunk-size line
        self.chunk_left = 0
        self.crlf_left = 0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        reader = self.reader
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            self.in_body = True
            status = int(head[9:12])
            if status != 200:
                reader.fail(f"SSE GET -> {status}: {data[:200]!r}")
                self.close()
                return
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            if not data:
                return
        try:
            reader.feed(self._dechunk(data) if self.chunked else data, now)
        except (ValueError, KeyError, TypeError) as exc:
            reader.fail(f"bad SSE payload: {type(exc).__name__}: {exc}")
        if reader.done.is_set():
            self.close()

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.pending + data if self.pending else data
        self.pending = b""
        out: list[bytes] = []
        i, n = 0, len(buf)
        while i < n:
            if self.chunk_left:
                take = min(self.chunk_left, n - i)
                out.append(buf[i : i + take])
                i += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.crlf_left = 2
            elif self.crlf_left:
                take = min(self.crlf_left, n - i)
                i += take
                self.crlf_left -= take
            else:
                j = buf.find(b"\r\n", i)
                if j < 0:
                    self.pending = buf[i:]
                    break
                size = int(buf[i:j].split(b";")[0], 16)
                i = j + 2
                if size == 0:
                    self.reader.fail(f"SSE response ended after {len(self.reader.seqs)} messages")
                    break
                self.chunk_left = size
        return b"".join(out)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reader.done.is_set():
            self.reader.fail(
                f"SSE connection closed after {len(self.reader.seqs)} messages"
                + (f": {exc}" if exc else "")
            )
        if not self.lost.done():
            self.lost.set_result(None)


async def raw_sse_read(url: str, offset: str, reader: SseReader, cfg: Config) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    request = (
        f"GET {parts.path}?offset={quote(offset, safe='')}&live=sse HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Accept-Encoding: identity\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    protocol: RawSseProtocol | None = None
    try:
        async with asyncio.timeout(cfg.request_timeout_s):
            _, protocol = await loop.create_connection(
                lambda: RawSseProtocol(request, reader), host, port
            )
        await protocol.lost  # until done (we close) or the server closes
    except asyncio.CancelledError:
        raise
    except (TimeoutError, OSError) as exc:
        reader.fail(f"SSE connect error: {type(exc).__name__}: {exc}")
    finally:
        if protocol is not None:
            protocol.close()


def start_sse(run: TargetRun, url: str, offset: str, reader: SseReader) -> asyncio.Task[None]:
    if run.cfg.client == "raw":
        return asyncio.create_task(raw_sse_read(url, offset, reader, run.cfg))
    return asyncio.create_task(sse_read(run.session, url, offset, reader, run.cfg))


class Appender:
    """Sequential appends on one keep-alive connection (raw or aiohttp)."""

    def __init__(self, run: TargetRun, url: str) -> None:
        self.cfg = run.cfg
        self.url = url
        self.raw: RawHttpConnection | None = None
        self.session: aiohttp.ClientSession | None = None
        if self.cfg.client == "raw":
            self.raw = RawHttpConnection(url, self.cfg.request_timeout_s)
        else:
            self.session = run.single_connection_session()
        self.headers = {"Content-Type": JSON_CT}
        self.timeout = request_timeout(self.cfg)

    async def connect(self) -> None:
        """Open the connection before timing starts."""
        if self.raw is not None:
            async with asyncio.timeout(self.cfg.request_timeout_s):
                await self.raw.connect()
            return
        assert self.session is not None
        async with self.session.head(self.url, timeout=self.timeout) as resp:
            if resp.status != 200:
                raise BenchError(f"HEAD {self.url} -> {resp.status}")

    async def append(self, body: bytes) -> None:
        if self.raw is not None:
            await self.raw.append(body)
            return
        assert self.session is not None
        async with self.session.post(
            self.url, data=body, headers=self.headers, timeout=self.timeout
        ) as resp:
            await resp.read()
            if resp.status not in APPEND_OK:
                raise BenchError(f"POST {self.url} -> {resp.status}")

    async def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
        if self.session is not None:
            await self.session.close()


# --------------------------------------------------------------------------- scenarios


@dataclass
class TargetRun:
    cfg: Config
    server: ServerProcess
    session: aiohttp.ClientSession
    round_index: int
    #: More processes whose CPU the scenarios report, as "<name>_cpu_pct" beside
    #: "server_cpu_pct" (bench_scaleout.py: other replicas, redis-server).
    extra_cpu_pids: dict[str, Sequence[int]] = field(default_factory=dict)

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by the server and each extra process group."""
        snap = {"server": cpu_seconds(self.server.pids)}
        for name, pids in self.extra_cpu_pids.items():
            snap[name] = cpu_seconds(pids)
        return snap

    def stream_url(self, scenario: str) -> str:
        name = f"bench-r{self.round_index}-{scenario}-{uuid.uuid4().hex[:8]}"
        return f"{self.server.base_url}/v1/stream/{name}"

    def single_connection_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            headers={"Accept-Encoding": self.cfg.accept_encoding},
        )


async def scenario_appends(run: TargetRun) -> dict[str, Any]:
    cfg = run.cfg
    url = run.stream_url("appends")
    total = cfg.append_warmup + cfg.appends
    bodies = [make_message(i, 0.0) for i in range(total)]
    await create_stream(run.session, url, cfg)
    appender = Appender(run, url)
    try:
        await appender.connect()
        for i in range(cfg.append_warmup):
            await appender.append(bodies[i])
        perf = time.perf_counter
        rtts: list[float] = []
        cpu0, srv0 = time.process_time(), run.cpu_snapshot()
        t0 = perf()
        for i in range(cfg.append_warmup, total):
            a = perf()
            await appender.append(bodies[i])
            rtts.append(perf() - a)
        elapsed = perf() - t0
        cpu1, srv1 = time.process_time(), run.cpu_snapshot()
    finally:
        await appender.close()
    rtts.sort()
    return per_append({
        "appends": cfg.appends,
        "elapsed_s": elapsed,
        "appends_per_s": cfg.appends / elapsed,
        "append_p50_ms": percentile(rtts, 50) * 1e3,
        "append_p99_ms": percentile(rtts, 99) * 1e3,
        "client_cpu_pct": 100.0 * (cpu1 - cpu0) / elapsed,
        **cpu_pcts(srv0, srv1, elapsed),
    })  # fmt: skip


def per_append(figures: dict[str, Any]) -> dict[str, Any]:
    """``figures`` plus the server's CPU per append (µs): the figure a loaded machine
    disturbs least (appends/s also depends on how much CPU the server was given)."""
    cpu = figures.get("server_cpu_pct")
    if cpu is not None and figures["appends_per_s"]:
        figures["server_us_per_append"] = cpu * 1e4 / figures["appends_per_s"]
    return figures


def cpu_pcts(before: dict[str, float], after: dict[str, float], span: float) -> dict[str, float]:
    """'<name>_cpu_pct' (% of one core over `span` seconds) for each cpu_snapshot() entry."""
    return {f"{name}_cpu_pct": 100.0 * (after[name] - before[name]) / span for name in before}


async def scenario_fanout(run: TargetRun, interval_ms: float) -> dict[str, Any]:
    url = run.stream_url("fanout")
    await create_stream(run.session, url, run.cfg)
    figures, _ = await fanout(run, url, [url] * run.cfg.fanout_readers, interval_ms)
    return figures


async def fanout(
    run: TargetRun, url: str, reader_urls: Sequence[str], interval_ms: float
) -> tuple[dict[str, Any], list[SseReader]]:
    """Paced appends to `url` (an existing stream), one SSE reader per entry of
    `reader_urls` (the same stream, possibly through other servers); the figures
    and the readers, in the order of `reader_urls`."""
    cfg = run.cfg
    n_readers, n_msgs = len(reader_urls), cfg.fanout_messages
    readers = [SseReader(n_msgs) for _ in range(n_readers)]
    tasks = [start_sse(run, u, "-1", r) for u, r in zip(reader_urls, readers, strict=True)]
    appender = Appender(run, url)
    try:
        try:
            async with asyncio.timeout(cfg.request_timeout_s):
                await asyncio.gather(*(r.ready.wait() for r in readers))
        except TimeoutError:
            ready = sum(r.ready.is_set() for r in readers)
            raise BenchError(f"only {ready}/{n_readers} SSE readers got a control event") from None
        if err := first_error(readers):
            raise BenchError(err)

        interval = interval_ms / 1e3
        perf = time.perf_counter
        await appender.connect()
        cpu0, srv0 = time.process_time(), run.cpu_snapshot()
        first_send = perf()
        for i in range(n_msgs):
            if interval:
                delay = first_send + i * interval - perf()
                if delay > 0:
                    await asyncio.sleep(delay)
            await appender.append(make_message(i, perf()))
            if i % 32 == 0 and (err := first_error(readers)):
                raise BenchError(err)
        last_send = perf()
        try:
            async with asyncio.timeout(cfg.request_timeout_s):
                await asyncio.gather(*(r.done.wait() for r in readers))
        except TimeoutError:
            counts = sorted(len(r.seqs) for r in readers)
            raise BenchError(
                f"readers did not receive all {n_msgs} messages within "
                f"{cfg.request_timeout_s}s of the last append (min {counts[0]}, "
                f"max {counts[-1]})"
            ) from None
        cpu1, srv1 = time.process_time(), run.cpu_snapshot()
    finally:
        await appender.close()
        await stop_tasks(tasks)

    if err := first_error(readers):
        raise BenchError(err)
    expected = list(range(n_msgs))
    for idx, r in enumerate(readers):
        if r.seqs != expected:
            got = r.seqs[:10]
            raise BenchError(
                f"reader {idx} got {len(r.seqs)} messages, not 0..{n_msgs - 1} in order "
                f"(first: {got})"
            )
    latencies = sorted(x for r in readers for x in r.lat)
    last_recv = max(r.last_recv for r in readers)
    span = last_recv - first_send
    deliveries = n_readers * n_msgs
    figures: dict[str, Any] = {
        "readers": n_readers,
        "messages": n_msgs,
        "interval_ms": interval_ms,
        "deliveries": deliveries,
        "append_span_s": last_send - first_send,
        "span_s": span,
        "deliveries_per_s": deliveries / span,
        "latency_p50_ms": percentile(latencies, 50) * 1e3,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "latency_max_ms": latencies[-1] * 1e3,
        "client_cpu_pct": 100.0 * (cpu1 - cpu0) / span,
        **cpu_pcts(srv0, srv1, span),
    }
    return figures, readers


async def populate(run: TargetRun, url: str, count: int) -> None:
    cfg = run.cfg
    batch = cfg.catchup_batch
    starts = list(range(0, count, batch))
    next_index = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < len(starts):
            start = starts[next_index]
            next_index += 1
            seqs = range(start, min(start + batch, count))
            if batch == 1:
                body = make_message(start, 0.0)
            else:
                body = b"[" + b",".join(make_message(s, 0.0) for s in seqs) + b"]"
            await append(session, url, body, cfg)

    conc = cfg.catchup_populate_concurrency
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conc),
        headers={"Accept-Encoding": cfg.accept_encoding},
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(conc)))


async def scenario_catchup(run: TargetRun) -> dict[str, Any]:
    cfg = run.cfg
    url = run.stream_url("catchup")
    n = cfg.catchup_messages
    await create_stream(run.session, url, cfg)
    t_pop = time.perf_counter()
    await populate(run, url, n)
    populate_s = time.perf_counter() - t_pop
    await asyncio.sleep(0.2)

    timeout = request_timeout(cfg)
    perf = time.perf_counter
    max_requests = n + 10
    samples: list[dict[str, Any]] = []
    async with run.single_connection_session() as session:
        for _ in range(cfg.catchup_repeats):
            bodies: list[bytes] = []
            offset = "-1"
            cpu0, srv0 = time.process_time(), cpu_seconds(run.server.pids)
            t0 = perf()
            for _req in range(max_requests):
                async with session.get(url, params={"offset": offset}, timeout=timeout) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise BenchError(f"GET offset={offset} -> {r.status}: {body[:200]!r}")
                    next_offset = r.headers.get("Stream-Next-Offset")
                    up_to_date = r.headers.get("Stream-Up-To-Date", "").lower() == "true"
                bodies.append(body)
                if up_to_date:
                    break
                if not next_offset or next_offset == offset:
                    raise BenchError(f"catch-up read made no progress at offset {offset}")
                offset = next_offset
            else:
                raise BenchError(f"no Stream-Up-To-Date after {max_requests} requests")
            elapsed = perf() - t0
            cpu1, srv1 = time.process_time(), cpu_seconds(run.server.pids)
            # Parse outside the timed section: the figure is the server's serving rate.
            seqs: list[int] = []
            for body in bodies:
                if body.strip():
                    seqs.extend(item["seq"] for item in _loads(body))
            if len(seqs) != n or sorted(seqs) != list(range(n)):
                raise BenchError(f"catch-up read {len(seqs)} messages, expected {n} distinct")
            samples.append(
                {
                    "elapsed_s": elapsed,
                    "msgs_per_s": n / elapsed,
                    "requests": len(bodies),
                    "bytes": sum(len(b) for b in bodies),
                    "client_cpu_pct": 100.0 * (cpu1 - cpu0) / elapsed,
                    "server_cpu_pct": 100.0 * (srv1 - srv0) / elapsed,
                }
            )
    best = statistics.median(s["msgs_per_s"] for s in samples)
    return {
        "messages": n,
        "populate_s": populate_s,
        "msgs_per_s": best,
        "elapsed_ms": n / best * 1e3,
        "requests": samples[0]["requests"],
        "bytes": samples[0]["bytes"],
        "client_cpu_pct": statistics.median(x["client_cpu_pct"] for x in samples),
        "server_cpu_pct": statistics.median(x["server_cpu_pct"] for x in samples),
        "samples": samples,
    }


async def open_idle_readers(
    run: TargetRun, url: str, count: int
) -> tuple[list[SseReader], list[asyncio.Task[None]]]:
    cfg = run.cfg
    sem = asyncio.Semaphore(cfg.open_concurrency)
    readers: list[SseReader] = []
    tasks: list[asyncio.Task[None]] = []

    async def open_one() -> None:
        reader = SseReader(0)
        async with sem:
            readers.append(reader)
            tasks.append(start_sse(run, url, "now", reader))
            await reader.ready.wait()

    try:
        async with asyncio.timeout(cfg.scenario_timeout_s / 2):
            await asyncio.gather(*(open_one() for _ in range(count)))
    except TimeoutError:
        ready = sum(r.ready.is_set() for r in readers)
        await stop_tasks(tasks)
        raise BenchError(f"only {ready}/{count} idle SSE readers got a control event") from None
    if err := first_error(readers):
        await stop_tasks(tasks)
        raise BenchError(err)
    return readers, tasks


async def scenario_idle(run: TargetRun) -> dict[str, Any]:
    cfg = run.cfg
    url = run.stream_url("idle")
    await create_stream(run.session, url, cfg)
    await append(run.session, url, make_message(0, 0.0), cfg)
    pids = run.server.pids
    # Warm-up: open and close a few readers so one-off allocations are not counted.
    _, warm_tasks = await open_idle_readers(run, url, min(20, cfg.idle_readers))
    await stop_tasks(warm_tasks)
    await asyncio.sleep(cfg.idle_settle_s)
    before = rss_kib(pids)
    readers, tasks = await open_idle_readers(run, url, cfg.idle_readers)
    try:
        await asyncio.sleep(cfg.idle_settle_s)
        if err := first_error(readers):
            raise BenchError(err)
        after = rss_kib(pids)
    finally:
        await stop_tasks(tasks)
    return {
        "readers": cfg.idle_readers,
        "pids": list(pids),
        "pids_note": run.server.pids_note,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_reader": (after - before) / cfg.idle_readers,
    }


async def scenario_producers(run: TargetRun, one_stream: bool) -> dict[str, Any]:
    """--producers (64) producers appending at once, each on a keep-alive connection
    of its own, sequentially (each append awaits its answer): each to a stream of its
    own, or all to one stream. What many concurrent runs are; total appends/s counts
    from the start of the timed appends to the last answer."""
    cfg = run.cfg
    n = cfg.producers
    if one_stream:
        urls = [run.stream_url("producers-one")] * n
    else:
        urls = [run.stream_url(f"producers-{i}") for i in range(n)]
    await asyncio.gather(*(create_stream(run.session, url, cfg) for url in dict.fromkeys(urls)))
    appenders = [Appender(run, url) for url in urls]
    bodies = [make_message(i, 0.0) for i in range(cfg.producer_warmup + cfg.producer_appends)]
    perf = time.perf_counter
    rtts: list[list[float]] = [[] for _ in range(n)]

    async def produce(k: int, timed: bool) -> None:
        appender = appenders[k]
        if not timed:
            for body in bodies[: cfg.producer_warmup]:
                await appender.append(body)
            return
        mine = rtts[k]
        for body in bodies[cfg.producer_warmup :]:
            a = perf()
            await appender.append(body)
            mine.append(perf() - a)

    try:
        await asyncio.gather(*(a.connect() for a in appenders))
        await asyncio.gather(*(produce(k, timed=False) for k in range(n)))
        cpu0, srv0 = time.process_time(), run.cpu_snapshot()
        t0 = perf()
        await asyncio.gather(*(produce(k, timed=True) for k in range(n)))
        elapsed = perf() - t0
        cpu1, srv1 = time.process_time(), run.cpu_snapshot()
    finally:
        await asyncio.gather(*(a.close() for a in appenders))
    lat = sorted(x for mine in rtts for x in mine)
    return per_append({
        "producers": n,
        "appends": len(lat),
        "elapsed_s": elapsed,
        "appends_per_s": len(lat) / elapsed,
        "append_p50_ms": percentile(lat, 50) * 1e3,
        "append_p99_ms": percentile(lat, 99) * 1e3,
        "client_cpu_pct": 100.0 * (cpu1 - cpu0) / elapsed,
        **cpu_pcts(srv0, srv1, elapsed),
    })  # fmt: skip


async def open_sse_readers(
    run: TargetRun, url: str, readers: Sequence[SseReader], offset: str
) -> list[asyncio.Task[None]]:
    """One SSE reader task per entry of `readers`, at most --open-concurrency opening at
    once; returns once every reader has had its first control event."""
    sem = asyncio.Semaphore(run.cfg.open_concurrency)
    tasks: list[asyncio.Task[None]] = []

    async def open_one(reader: SseReader) -> None:
        async with sem:
            tasks.append(start_sse(run, url, offset, reader))
            await reader.ready.wait()

    try:
        async with asyncio.timeout(run.cfg.scenario_timeout_s / 2):
            await asyncio.gather(*(open_one(r) for r in readers))
    except TimeoutError:
        ready = sum(r.ready.is_set() for r in readers)
        await stop_tasks(tasks)
        raise BenchError(f"only {ready}/{len(readers)} SSE readers got a control event") from None
    if err := first_error(readers):
        await stop_tasks(tasks)
        raise BenchError(err)
    return tasks


async def scenario_fanout_wide(run: TargetRun) -> dict[str, Any]:
    """--wide-readers SSE readers of one stream; --wide-messages appends paced one every
    --wide-interval-ms whether or not the readers have the last one. Per append: its own
    round trip, and the delay until the last reader had it."""
    cfg = run.cfg
    url = run.stream_url("fanout-wide")
    await create_stream(run.session, url, cfg)
    n_readers, n_msgs = cfg.wide_readers, cfg.wide_messages
    readers = [SseReader(n_msgs) for _ in range(n_readers)]
    tasks = await open_sse_readers(run, url, readers, "-1")
    appender = Appender(run, url)
    perf = time.perf_counter
    rtts: list[float] = []
    try:
        await appender.connect()
        interval = cfg.wide_interval_ms / 1e3
        cpu0, srv0 = time.process_time(), run.cpu_snapshot()
        first_send = perf()
        for i in range(n_msgs):
            delay = first_send + i * interval - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = perf()
            await appender.append(make_message(i, sent))
            rtts.append(perf() - sent)
            if err := first_error(readers):
                raise BenchError(err)
        try:
            async with asyncio.timeout(cfg.scenario_timeout_s / 2):
                await asyncio.gather(*(r.done.wait() for r in readers))
        except TimeoutError:
            counts = sorted(len(r.seqs) for r in readers)
            raise BenchError(
                f"readers did not receive all {n_msgs} messages (min {counts[0]}, max {counts[-1]})"
            ) from None
        span = max(r.last_recv for r in readers) - first_send
        cpu1, srv1 = time.process_time(), run.cpu_snapshot()
    finally:
        await appender.close()
        await stop_tasks(tasks)
    if err := first_error(readers):
        raise BenchError(err)
    expected = list(range(n_msgs))
    if any(r.seqs[:n_msgs] != expected for r in readers):
        raise BenchError("a reader did not get every message in order")
    # Each reader's i-th latency is message i's; the last reader of message i is the max.
    to_last = sorted(max(r.lat[i] for r in readers) for i in range(n_msgs))
    latencies = sorted(x for r in readers for x in r.lat)
    rtts.sort()
    return {
        "readers": n_readers,
        "messages": n_msgs,
        "interval_ms": cfg.wide_interval_ms,
        "last_reader_p50_ms": percentile(to_last, 50) * 1e3,
        "last_reader_p99_ms": percentile(to_last, 99) * 1e3,
        "latency_p50_ms": percentile(latencies, 50) * 1e3,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "append_p50_ms": percentile(rtts, 50) * 1e3,
        "append_p99_ms": percentile(rtts, 99) * 1e3,
        "deliveries_per_s": n_readers * n_msgs / span,
        "client_cpu_pct": 100.0 * (cpu1 - cpu0) / span,
        **cpu_pcts(srv0, srv1, span),
    }


STALLED_BATCH = 50  # messages per POST in the stalled scenario (a JSON array)
STALLED_RCVBUF = 4096  # the stalled readers' socket receive buffer (bytes)


async def open_stalled_reader(url: str, cfg: Config) -> socket.socket:
    """An SSE reader that reads its response head and first event, then never reads
    again; its small receive buffer makes the server's send side fill quickly."""
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(cfg.request_timeout_s):
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(
                sock,
                f"GET {parts.path}?offset=now&live=sse HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode(),
            )
            seen = b""
            while b"event: control" not in seen and b"event:control" not in seen:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise BenchError("a stalled reader's response ended before its first event")
                seen += chunk
    except BaseException:
        sock.close()
        raise
    return sock


async def cut_off(sock: socket.socket, wait_s: float) -> bool:
    """Whether the server ended this reader's response: drain what it sent, up to the
    response's last chunk (the connection may stay open) or the connection's end."""
    loop = asyncio.get_running_loop()
    tail = b""
    try:
        async with asyncio.timeout(wait_s):
            while chunk := await loop.sock_recv(sock, 1 << 16):
                tail = (tail + chunk)[-5:]
                if tail == b"0\r\n\r\n":
                    return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the server
    return True


async def scenario_stalled(run: TargetRun) -> dict[str, Any]:
    """--stalled-readers SSE readers stop reading; --stalled-messages are appended
    (STALLED_BATCH per POST) while one reader keeps up. Server RSS growth over the
    run, and how many stalled readers the server disconnected."""
    cfg = run.cfg
    url = run.stream_url("stalled")
    await create_stream(run.session, url, cfg)
    await append(run.session, url, make_message(0, 0.0), cfg)
    posts = -(-cfg.stalled_messages // STALLED_BATCH)
    live = SseReader(posts * STALLED_BATCH)
    socks: list[socket.socket] = []
    tasks = await open_sse_readers(run, url, [live], "now")
    try:
        sem = asyncio.Semaphore(cfg.open_concurrency)

        async def open_one() -> None:
            async with sem:
                socks.append(await open_stalled_reader(url, cfg))

        await asyncio.gather(*(open_one() for _ in range(cfg.stalled_readers)))
        await asyncio.sleep(cfg.idle_settle_s)
        before = rss_kib(run.server.pids)
        appender = Appender(run, url)
        try:
            await appender.connect()
            t0 = time.perf_counter()
            for p in range(posts):
                base = p * STALLED_BATCH
                batch = [make_message(base + i, 0.0) for i in range(STALLED_BATCH)]
                await appender.append(b"[" + b",".join(batch) + b"]")
            append_s = time.perf_counter() - t0
        finally:
            await appender.close()
        try:
            async with asyncio.timeout(cfg.request_timeout_s):
                await live.done.wait()
        except TimeoutError:
            raise BenchError(f"the live reader got {len(live.seqs)} messages") from None
        if live.error or live.seqs != list(range(posts * STALLED_BATCH)):
            raise BenchError(f"the live reader missed messages: {live.error}")
        await asyncio.sleep(cfg.idle_settle_s)
        after = rss_kib(run.server.pids)
        ended = await asyncio.gather(*(cut_off(s, cfg.request_timeout_s) for s in socks))
    finally:
        for sock in socks:
            sock.close()
        await stop_tasks(tasks)
    return {
        "stalled_readers": cfg.stalled_readers,
        "messages": posts * STALLED_BATCH,
        "append_s": append_s,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_growth_mib": (after - before) / 1024,
        "cut_off": sum(ended),
    }


SCENARIOS: dict[str, Callable[[TargetRun], Any]] = {
    "appends": scenario_appends,
    "fanout": lambda run: scenario_fanout(run, run.cfg.fanout_interval_ms),
    "fanout-burst": lambda run: scenario_fanout(run, 0.0),
    "catchup": scenario_catchup,
    "idle": scenario_idle,
    "producers-64": lambda run: scenario_producers(run, one_stream=False),
    "producers-64-one-stream": lambda run: scenario_producers(run, one_stream=True),
    "fanout-wide": scenario_fanout_wide,
    "stalled": scenario_stalled,
}


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    scenario: str
    key: str
    label: str
    fmt: str
    higher_is_better: bool

    @property
    def name(self) -> str:
        return f"{self.scenario}.{self.key}"


CPU_SCENARIOS = (
    "appends", "fanout", "fanout-burst", "catchup", "producers-64", "producers-64-one-stream",
    "fanout-wide",
)  # fmt: skip
METRICS = (
    Metric("appends", "appends_per_s", "appends/s (sequential, 1 conn)", "{:,.0f}", True),
    Metric("appends", "append_p50_ms", "append RTT p50 (ms)", "{:.2f}", False),
    Metric("appends", "append_p99_ms", "append RTT p99 (ms)", "{:.2f}", False),
    Metric("appends", "server_us_per_append", "server CPU per append (µs)", "{:.1f}", False),
    Metric("fanout", "latency_p50_ms", "fan-out latency p50 (ms)", "{:.1f}", False),
    Metric("fanout", "latency_p99_ms", "fan-out latency p99 (ms)", "{:.1f}", False),
    Metric("fanout", "deliveries_per_s", "fan-out deliveries/s", "{:,.0f}", True),
    Metric("fanout-burst", "latency_p50_ms", "burst fan-out latency p50 (ms)", "{:.1f}", False),
    Metric("fanout-burst", "latency_p99_ms", "burst fan-out latency p99 (ms)", "{:.1f}", False),
    Metric("fanout-burst", "deliveries_per_s", "burst fan-out deliveries/s", "{:,.0f}", True),
    Metric("catchup", "msgs_per_s", "catch-up msgs/s", "{:,.0f}", True),
    Metric("idle", "kib_per_reader", "RSS per idle SSE reader (KiB)", "{:.1f}", False),
    Metric(
        "producers-64", "appends_per_s", "appends/s (64 producers, own streams)", "{:,.0f}", True
    ),
    Metric("producers-64", "append_p50_ms", "64 producers: append RTT p50 (ms)", "{:.2f}", False),
    Metric("producers-64", "append_p99_ms", "64 producers: append RTT p99 (ms)", "{:.2f}", False),
    Metric(
        "producers-64",
        "server_us_per_append",
        "64 producers: server CPU per append (µs)",
        "{:.1f}",
        False,
    ),
    Metric(
        "producers-64-one-stream",
        "appends_per_s",
        "appends/s (64 producers, one stream)",
        "{:,.0f}",
        True,
    ),
    Metric(
        "producers-64-one-stream",
        "append_p50_ms",
        "64 on one stream: append RTT p50 (ms)",
        "{:.2f}",
        False,
    ),
    Metric(
        "producers-64-one-stream",
        "append_p99_ms",
        "64 on one stream: append RTT p99 (ms)",
        "{:.2f}",
        False,
    ),
    Metric(
        "producers-64-one-stream",
        "server_us_per_append",
        "64 on one stream: server CPU per append (µs)",
        "{:.1f}",
        False,
    ),
    Metric(
        "fanout-wide", "last_reader_p99_ms", "wide fan-out to last reader p99 (ms)", "{:.0f}", False
    ),
    Metric("fanout-wide", "latency_p99_ms", "wide fan-out latency p99 (ms)", "{:.0f}", False),
    Metric("fanout-wide", "append_p99_ms", "wide fan-out append RTT p99 (ms)", "{:.1f}", False),
    Metric("fanout-wide", "deliveries_per_s", "wide fan-out deliveries/s", "{:,.0f}", True),
    Metric("stalled", "rss_growth_mib", "RSS growth, stalled readers (MiB)", "{:.1f}", False),
    Metric("stalled", "cut_off", "stalled readers disconnected", "{:.0f}", True),
)


def summarize(
    results: dict[str, dict[str, list[dict[str, Any]]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """target -> metric key -> {median, min, max, n}."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for target, by_scenario in results.items():
        out: dict[str, dict[str, float]] = {}
        for m in METRICS:
            values = [r[m.key] for r in by_scenario.get(m.scenario, []) if m.key in r]
            if values:
                out[m.name] = over_rounds(values)
        for scenario in CPU_SCENARIOS:
            rows = by_scenario.get(scenario, [])
            for cpu_key in ("client_cpu_pct", "server_cpu_pct"):
                values = [r[cpu_key] for r in rows if cpu_key in r]
                if values:
                    out[f"{scenario}.{cpu_key}"] = over_rounds(values)
        summary[target] = out
    return summary


def goals(summary: dict[str, dict[str, dict[str, float]]]) -> list[tuple[str, str, bool]]:
    """Project targets for tether; (description, figures, met)."""

    def med(target: str, key: str) -> float | None:
        entry = summary.get(target, {}).get(key)
        return None if entry is None else entry["median"]

    out: list[tuple[str, str, bool]] = []
    if "tether" not in summary:
        return out
    t_app = med("tether", "appends.appends_per_s")
    if t_app is not None:
        for ref, factor in (("ref-file", 2.0), ("ref-memory", 0.8)):
            r = med(ref, "appends.appends_per_s")
            if r:
                out.append(
                    (
                        f"appends/s >= {factor:g}x {ref}",
                        f"{t_app:,.0f} vs {r:,.0f} ({t_app / r:.2f}x)",
                        t_app >= factor * r,
                    )
                )
    t_p99 = med("tether", "fanout.latency_p99_ms")
    r_p99 = med("ref-memory", "fanout.latency_p99_ms")
    if t_p99 is not None and r_p99 is not None:
        out.append(("fan-out p99 <= ref-memory", f"{t_p99:.1f} vs {r_p99:.1f} ms", t_p99 <= r_p99))
    t_cu = med("tether", "catchup.msgs_per_s")
    if t_cu is not None:
        for ref in REF_TARGETS:
            r = med(ref, "catchup.msgs_per_s")
            if r:
                out.append(
                    (
                        f"catch-up >= 0.8x {ref}",
                        f"{t_cu:,.0f} vs {r:,.0f} ({t_cu / r:.2f}x)",
                        t_cu >= 0.8 * r,
                    )
                )
    t_wide = med("tether", "fanout-wide.last_reader_p99_ms")
    r_wide = med("ref-memory", "fanout-wide.last_reader_p99_ms")
    if t_wide is not None and r_wide is not None:
        out.append(
            (
                "wide fan-out to last reader p99 <= ref-memory",
                f"{t_wide:.0f} vs {r_wide:.0f} ms",
                t_wide <= r_wide,
            )
        )
    t_idle = med("tether", "idle.kib_per_reader")
    if t_idle is not None:
        # Issue 24's bound, meant at 10,000 readers (--idle-readers 10000).
        out.append(("<= 10 KiB per idle SSE reader", f"{t_idle:.1f} KiB", t_idle <= 10.0))
    out += producer_goals(med)
    return out


def producer_goals(
    med: Callable[[str, str], float | None],
) -> list[tuple[str, str, bool]]:
    """Issue 24's goals for many producers and for Redis: with 64 producers on streams
    of their own, SQLite >= 1x ref-memory and >= 10x ref-file and Redis >= 0.9x SQLite
    in total appends/s; sequentially, Redis >= 0.6x SQLite."""
    checks = (
        ("producers-64", "tether", "ref-memory", 1.0),
        ("producers-64", "tether", "ref-file", 10.0),
        ("producers-64", "tether-redis", "tether", 0.9),
        ("appends", "tether-redis", "tether", 0.6),
    )
    out = []
    for scenario, mine, other, factor in checks:
        a, b = med(mine, f"{scenario}.appends_per_s"), med(other, f"{scenario}.appends_per_s")
        if a is not None and b:
            out.append(
                (
                    f"{scenario}: {mine} >= {factor:g}x {other}",
                    f"{a:,.0f} vs {b:,.0f} appends/s ({a / b:.2f}x)",
                    a >= factor * b,
                )
            )
    return out


def table_rows(
    cfg: Config, summary: dict[str, dict[str, dict[str, float]]]
) -> tuple[list[str], list[list[str]]]:
    targets = [t for t in cfg.targets if t in summary]
    refs = [r for r in REF_TARGETS if r in targets] if "tether" in targets else []
    pairs = [(t, b) for t, b in BASELINES.items() if t in targets and b in targets]
    header = ["metric", *targets, *(f"tether/{r}" for r in refs), *(f"{t}/{b}" for t, b in pairs)]
    rows: list[list[str]] = []
    for m in METRICS:
        if m.scenario not in cfg.scenarios:
            continue
        row = [m.label + ("" if m.higher_is_better else " ↓")]
        for t in targets:
            entry = summary[t].get(m.name)
            row.append("FAIL" if entry is None else m.fmt.format(entry["median"]))
        for mine, other in [("tether", r) for r in refs] + pairs:
            te, re_ = summary[mine].get(m.name), summary[other].get(m.name)
            if te is None or re_ is None or not re_["median"]:
                row.append("-")
            else:
                row.append(f"{te['median'] / re_['median']:.2f}x")
        rows.append(row)
    return header, rows


def cpu_lines(cfg: Config, summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = []
    for scenario in CPU_SCENARIOS:
        if scenario not in cfg.scenarios:
            continue
        parts = []
        for t in cfg.targets:
            c = summary.get(t, {}).get(f"{scenario}.client_cpu_pct")
            s = summary.get(t, {}).get(f"{scenario}.server_cpu_pct")
            if c and s:
                parts.append(f"{t} client {c['median']:.0f}% / server {s['median']:.0f}%")
        if parts:
            lines.append(f"{scenario}: " + "; ".join(parts))
    return lines


# --------------------------------------------------------------------------- environment


def machine_info(cfg: Config) -> dict[str, Any]:
    """The harness's record of the machine, plus the client library, node and the disk."""
    node_version = ""
    if any(t in REF_TARGETS for t in cfg.targets):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            node_version = subprocess.run(
                [cfg.node_bin, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
    data_fs = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        tmp = tempfile.gettempdir()
        fs = subprocess.run(
            ["df", "--output=fstype,source", tmp], capture_output=True, text=True, timeout=10
        ).stdout.split()
        if len(fs) >= 4:
            data_fs = f"{tmp} on {fs[2]} ({fs[3]})"
    return {
        **base_machine_info(),
        "aiohttp": aiohttp.__version__,
        "node": node_version,
        "reference_server": f"@durable-streams/server {REF_VERSION}",
        "data_dirs": data_fs,
    }


# --------------------------------------------------------------------------- driver


async def run_server_session(
    cfg: Config, target: str, round_index: int, workroot: Path, scenarios: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Start a fresh server for `target`, run `scenarios` against it, stop it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{target}-r{round_index}-", dir=workroot))
    redis: RedisProcess | None = None
    if target == "floor-redis":
        redis = RedisProcess.build(cfg.redis_bin, "everysec", workdir)
        server = build_server(cfg, target, workdir, store=redis.url())
    elif target.startswith("tether-redis"):
        redis = RedisProcess.build(cfg.redis_bin, "everysec", workdir)
        build = "tether-base" if target.endswith("-base") else "tether"
        server = build_server(cfg, build, workdir, store=redis.url())
    else:
        server = build_server(cfg, target, workdir)
    results: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    try:
        if redis is not None:
            redis.start()
            await redis.wait_ready(cfg.startup_timeout_s)
        server.start()
        await server.wait_ready(cfg.startup_timeout_s)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, headers={"Accept-Encoding": cfg.accept_encoding}
        ) as session:
            extra: dict[str, Sequence[int]] = {} if redis is None else {"redis": redis.pids}
            run = TargetRun(cfg, server, session, round_index, extra)
            for scenario in scenarios:
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(cfg.scenario_timeout_s):
                        results[scenario] = await SCENARIOS[scenario](run)
                except (BenchError, TimeoutError, aiohttp.ClientError, OSError) as exc:
                    kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                    msg = f"{target} round {round_index + 1} {scenario}: {kind}: {exc}"
                    if server.proc is not None and server.proc.poll() is not None:
                        msg += f"\n--- server exited ({server.proc.returncode}); log tail:\n"
                        msg += server.log_tail()
                    if not cfg.keep_going:
                        raise BenchError(msg) from exc
                    errors.append(msg)
                    print(f"  FAILED {msg}", file=sys.stderr, flush=True)
                    if server.proc is not None and server.proc.poll() is not None:
                        break
                    continue
                took = time.perf_counter() - t0
                if cfg.verbose:
                    brief = {
                        k: round(v, 3) if isinstance(v, float) else v
                        for k, v in results[scenario].items()
                        if k != "samples"
                    }
                    print(f"  {target} r{round_index + 1} {scenario} ({took:.1f}s): {brief}")
                else:
                    print(f"  {target} r{round_index + 1} {scenario} done ({took:.1f}s)")
                await asyncio.sleep(0.2)
    finally:
        server.stop()
        if redis is not None:
            redis.stop()
    return results, errors


async def run_target_round(
    cfg: Config, target: str, round_index: int, workroot: Path
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    # The idle-memory scenario gets its own fresh server so that its RSS baseline
    # does not depend on what the other scenarios left in the server's heap.
    # The wide fan-out and the stalled readers get one each too: 10,000 connections, or
    # 50,000 messages, leave the heap of a server larger for whatever runs after them.
    alone = ("idle", "fanout-wide", "stalled")
    groups = [[s for s in cfg.scenarios if s not in alone]]
    groups += [[s] for s in cfg.scenarios if s in alone]
    results: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for group in groups:
        if not group:
            continue
        figures, errs = await run_server_session(cfg, target, round_index, workroot, group)
        results.update(figures)
        errors += errs
    return results, errors


async def run_all(cfg: Config, workroot: Path) -> dict[str, Any]:
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {s: [] for s in cfg.scenarios} for t in cfg.targets
    }
    errors: list[str] = []
    for round_index in range(cfg.rounds):
        print(f"round {round_index + 1}/{cfg.rounds}", flush=True)
        for target in cfg.targets:
            try:
                figures, errs = await run_target_round(cfg, target, round_index, workroot)
            except BenchError as exc:
                if not cfg.keep_going:
                    raise
                errors.append(str(exc))
                print(f"  FAILED {exc}", file=sys.stderr, flush=True)
                continue
            errors += errs
            for scenario, fig in figures.items():
                fig["round"] = round_index + 1
                results[target][scenario].append(fig)
            await asyncio.sleep(0.5)
    return {"results": results, "errors": errors}


def main(argv: Sequence[str] | None = None) -> int:
    cfg, ns = parse_args(argv)
    preflight(cfg)
    need = max(cfg.idle_readers, cfg.wide_readers) + cfg.fanout_readers + 512
    nofile = raise_nofile(max(need, 4096))
    if nofile < cfg.idle_readers + 64:
        raise BenchError(f"RLIMIT_NOFILE is {nofile}; too low for {cfg.idle_readers} readers")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = dt.datetime.now(dt.UTC)
    info = machine_info(cfg)
    loop_factory, loop_name = client_loop(ns.no_uvloop)
    print(
        f"targets={','.join(cfg.targets)} scenarios={','.join(cfg.scenarios)} "
        f"rounds={cfg.rounds} client loop={loop_name}",
        flush=True,
    )
    workroot = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    ok = False
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            outcome = runner.run(run_all(cfg, workroot))
        ok = not outcome["errors"]
    finally:
        kill_all_servers()
        cleanup_workroot(workroot, keep_logs=not ok)
    finished = dt.datetime.now(dt.UTC)

    results = outcome["results"]
    errors: list[str] = outcome["errors"]
    summary = summarize(results)
    header, rows = table_rows(cfg, summary)
    print()
    print(f"medians over {cfg.rounds} round(s); ↓ = lower is better")
    print(format_text_table(header, rows))
    cpu = cpu_lines(cfg, summary)
    if cpu:
        print("\nCPU (% of one core, median; client = this Python process):")
        for line in cpu:
            print("  " + line)
    goal_rows = goals(summary)
    if goal_rows:
        print("\ntether goals:")
        for desc, figures, met in goal_rows:
            print(f"  [{'met ' if met else 'MISS'}] {desc}: {figures}")
    if errors:
        print(f"\n{len(errors)} failure(s):", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)

    settings = {k: v for k, v in vars(cfg).items() if k not in ("keep_going", "verbose")}
    command = command_line()
    if ns.json:
        doc = {
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "command": command,
            "client_loop": loop_name,
            "machine": info,
            "config": settings,
            "summary": summary,
            "results": results,
            "goals": [{"goal": d, "figures": f, "met": m} for d, f, m in goal_rows],
            "errors": errors,
        }
        Path(ns.json).write_text(json.dumps(doc, indent=2, default=list) + "\n")
        print(f"\nraw figures written to {ns.json}")
    if ns.markdown:
        print()
        print(
            render_markdown(
                cfg, info, started, command, loop_name, header, rows, cpu, goal_rows, errors
            )
        )
    return 1 if errors else 0


def render_markdown(
    cfg: Config,
    info: dict[str, Any],
    started: dt.datetime,
    command: str,
    loop_name: str,
    header: list[str],
    rows: list[list[str]],
    cpu: list[str],
    goal_rows: list[tuple[str, str, bool]],
    errors: list[str],
) -> str:
    lines = [
        f"## {started.strftime('%Y-%m-%d %H:%M UTC')}: tether vs reference {REF_VERSION}",
        "",
        f"- Machine: {info['nproc']} CPU(s), {info['cpu_model']}, {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}; client and servers share it"
        + (f"; data directories in {info['data_dirs']}." if info["data_dirs"] else "."),
        f"- Software: Python {info['python']} (benchmark client: {cfg.client} HTTP/1.1 on the "
        f"hot paths, aiohttp {info['aiohttp']} elsewhere, {loop_name}), "
        f"Node {info['node'] or 'n/a'}, {info['reference_server']}"
        + (f", tether commit {info['git_commit']}" if info["git_commit"] else ""),
        f"- Command: `{command}`",
        f"- Medians over {cfg.rounds} round(s); targets alternate within each round, each "
        "on a fresh server process and data directory; ↓ = lower is better.",
        f"- appends: {cfg.appends:,} sequential ~{MESSAGE_SIZE}-byte JSON appends on one "
        f"keep-alive connection after {cfg.append_warmup} warm-up appends.",
        f"- fan-out: {cfg.fanout_readers} SSE readers on one stream, {cfg.fanout_messages} "
        f"appends paced one every {cfg.fanout_interval_ms:g} ms (an append that is late "
        "goes out as soon as the previous one is answered); burst fan-out: the same with "
        "back-to-back appends. Latency = append sent -> chunk read by a reader; "
        "deliveries/s = deliveries / (first append sent -> last delivery); every reader "
        "must get every message in order.",
        f"- catch-up: {cfg.catchup_messages:,} messages ("
        + ("appended one per POST" if cfg.catchup_batch == 1 else f"{cfg.catchup_batch} per POST")
        + ") read from "
        "offset -1 following Stream-Next-Offset until Stream-Up-To-Date "
        f"(Accept-Encoding: {cfg.accept_encoding}; median of {cfg.catchup_repeats} reads "
        "per round; JSON parsing not timed; count checked).",
        f"- idle: on a fresh server, VmRSS of the process holding the listening socket "
        f"before and {cfg.idle_settle_s:g} s after opening {cfg.idle_readers:,} idle SSE "
        "readers (offset=now), divided by the number of readers.",
        "",
        format_markdown_table(header, rows),
    ]
    if cpu:
        lines += ["", "CPU, % of one core (median; client = the benchmark process):", ""]
        lines += [f"- {line}" for line in cpu]
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        kill_all_servers()
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        kill_all_servers()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
