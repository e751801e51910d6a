"""The OpenAI-compatible gateway's added latency: tether vs LiteLLM vs the upstream directly.

Starts one local OpenAI-compatible upstream (``benchmarks/upstream.py``: every
completion streams ``--tokens`` content chunks, the first ``--ttft-ms`` after
the request, then one every ``--gap-ms``), then the gateways in front of it:

- ``tether``: ``.venv/bin/tether serve --port P --data-dir <tmp>`` with
  ``TETHER_OPENAI_BASE_URL=<upstream>/v1``, ``TETHER_OPENAI_API_KEY=bench-key``,
  ``TETHER_OPENAI_MODELS=bench-model``;
- ``litellm``: ``litellm --config <generated yaml> --port P`` (the pinned
  ``litellm[proxy]`` of ``benchmarks/requirements-litellm.txt``, installed on
  first use into its own virtualenv, ``benchmarks/.work/litellm-venv``), one
  model entry ``openai/bench-model`` with ``api_base: <upstream>/v1``, logging
  at ERROR, no callbacks, telemetry off and every remote fetch it knows of
  switched to its bundled copy (the machine may have no internet);
- ``passthrough`` (only when named in ``--targets``):
  ``benchmarks/passthrough.py``, a bare proxy that relays the bytes both ways
  and does nothing else. What it adds is what any gateway in Python pays on
  this machine for the extra hop; it is the floor under tether's figures;
- ``passthrough-asgi`` (only when named in ``--targets``): the same relay
  behind uvicorn, the HTTP server tether runs on (``--front asgi``): the floor
  for a gateway built on it.

The same client (a raw HTTP/1.1 asyncio client, the same for every target)
then sends ``--concurrency`` concurrent streamed chat completions to each
target in turn (``direct`` = the upstream itself), after ``--warmup`` untimed
completions; rounds rotate the order of the targets. ``--arrivals`` says how
the requests arrive:

- ``burst`` (default): ``--batches`` batches per target per round, and all of
  a batch's requests are written at the same instant (the worst case: every
  request's set-up queues behind the others');
- ``steady``: ``--concurrency`` completions are kept in flight, their starts
  spread evenly over one completion's length, each client starting its next
  completion when the last one ends (a loaded server's usual traffic);
  ``--batches`` x ``--concurrency`` completions are measured per round, all
  of them with ``--concurrency`` in flight.

For every completion it records the time to the first
content token (from writing the request), every gap between consecutive
content tokens, and every token's latency from the upstream writing it to the
client reading it (the upstream puts its CLOCK_MONOTONIC time in the token's
text). What a gateway adds is its percentile minus the direct percentile
(differences of percentiles: requests of different runs cannot be paired).

``--front`` says which API every target is asked through: OpenAI's Chat
Completions (default), OpenAI's Responses or Anthropic's Messages. The
upstream speaks all three, so each target is measured end to end in one API:
``direct`` asks the upstream in it, the relays relay it, tether is given an
upstream of that kind (``TETHER_OPENAI_API=responses``, or Anthropic's), and
LiteLLM a model of that provider (``openai/`` or ``anthropic/``).

    .venv/bin/python benchmarks/bench_gateway.py [--arrivals burst|steady] [--rounds 3] \
        [--front chat|responses|messages] [--json PATH] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from harness import (
    HOST,
    REPO_ROOT,
    BenchError,
    ServerProcess,
    client_loop,
    command_line,
    format_markdown_table,
    format_text_table,
    free_port,
    kill_all_servers,
    machine_cpu,
    machine_info,
    percentile,
    self_cpu_seconds,
)

BENCH_DIR = REPO_ROOT / "benchmarks"
LITELLM_VENV = BENCH_DIR / ".work" / "litellm-venv"
LITELLM_REQUIREMENTS = BENCH_DIR / "requirements-litellm.txt"
TARGETS = ("direct", "passthrough", "passthrough-asgi", "tether", "litellm")
DEFAULT_TARGETS = ("direct", "tether", "litellm")
ARRIVALS = ("burst", "steady")
#: The API every target is asked through (the upstream speaks each of them).
FRONTS = ("chat", "responses", "messages")
GATEWAYS = ("passthrough", "passthrough-asgi", "tether", "litellm")
MODEL = "bench-model"
API_KEY = "bench-key"

#: What tether must add at most (ms), per the issue.
GOAL_P50_MS = 2.0
GOAL_P99_MS = 10.0

#: (key, label); every metric is in ms and lower is better.
METRICS = (
    ("ttft", "time to first token"),
    ("gap", "inter-token gap"),
    ("token", "token latency"),
)


@dataclass(frozen=True)
class Config:
    targets: tuple[str, ...]
    rounds: int
    concurrency: int
    batches: int
    warmup: int
    tokens: int
    ttft_ms: float
    gap_ms: float
    startup_timeout_s: float
    request_timeout_s: float
    tether_bin: str
    litellm_venv: Path
    verbose: bool
    arrivals: str = "burst"
    front: str = "chat"


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"any of {', '.join(TARGETS)} (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    p.add_argument(
        "--concurrency", type=int, default=50, help="completions at once (default: %(default)s)"
    )
    p.add_argument(
        "--batches",
        type=int,
        default=4,
        help="timed batches of --concurrency completions per target per round "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="untimed concurrent completions per target before each round's batches "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=50,
        help="content tokens per completion (default: %(default)s)",
    )
    p.add_argument(
        "--ttft-ms",
        type=float,
        default=15.0,
        help="upstream: request -> first token (default: %(default)s)",
    )
    p.add_argument(
        "--gap-ms", type=float, default=15.0, help="upstream: between tokens (default: %(default)s)"
    )
    p.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default="burst",
        help="burst: each batch's requests are written at once; steady: --concurrency "
        "completions kept in flight, started evenly spread over one completion's length "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--front",
        choices=FRONTS,
        default="chat",
        help="the API every target is asked through: OpenAI's Chat Completions, OpenAI's "
        "Responses or Anthropic's Messages; the upstream speaks each, and tether and LiteLLM "
        "are given an upstream of the same API (default: %(default)s)",
    )
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds per server")
    p.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds a batch may take beyond the upstream's own streaming time",
    )
    p.add_argument(
        "--tether-bin",
        default=str(Path(sys.executable).parent / "tether"),
        help="default: the tether next to this Python",
    )
    p.add_argument(
        "--litellm-venv",
        default=str(LITELLM_VENV),
        help="LiteLLM's own virtualenv, created from requirements-litellm.txt if missing "
        "(default: benchmarks/.work/litellm-venv)",
    )
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON to PATH")
    p.add_argument("--markdown", action="store_true", help="print a section for RESULTS.md")
    p.add_argument("--no-uvloop", action="store_true", help="client on the default asyncio loop")
    p.add_argument("-v", "--verbose", action="store_true", help="print every batch's figures")
    ns = p.parse_args(argv)
    targets = tuple(t.strip() for t in ns.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        p.error(f"--targets: unknown {unknown}; choose from {', '.join(TARGETS)}")
    if "direct" not in targets:
        p.error("--targets must include direct: the gateways are measured against it")
    for name in ("rounds", "concurrency", "batches", "tokens"):
        if getattr(ns, name) < 1:
            p.error(f"--{name} must be >= 1")
    if ns.tokens < 2:
        p.error("--tokens must be >= 2 (gaps need two tokens)")
    if ns.warmup < 0 or ns.ttft_ms < 0 or ns.gap_ms < 0:
        p.error("--warmup, --ttft-ms and --gap-ms must be >= 0")
    cfg = Config(
        targets=targets,
        rounds=ns.rounds,
        concurrency=ns.concurrency,
        batches=ns.batches,
        warmup=ns.warmup,
        tokens=ns.tokens,
        ttft_ms=ns.ttft_ms,
        gap_ms=ns.gap_ms,
        startup_timeout_s=ns.startup_timeout,
        request_timeout_s=ns.request_timeout,
        tether_bin=ns.tether_bin,
        litellm_venv=Path(ns.litellm_venv),
        verbose=ns.verbose,
        arrivals=ns.arrivals,
        front=ns.front,
    )
    return cfg, ns


# --------------------------------------------------------------------------- LiteLLM setup


def pinned_litellm() -> str:
    """The version pinned in requirements-litellm.txt."""
    for line in LITELLM_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("litellm") and "==" in line:
            return line.split("==", 1)[1].strip()
    raise BenchError(f"no litellm==VERSION line in {LITELLM_REQUIREMENTS}")


def installed_litellm(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    res = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_litellm(venv: Path) -> str:
    """LiteLLM's version in ``venv``; creates the venv / installs the pin when needed."""
    want = pinned_litellm()
    have = installed_litellm(venv)
    if have == want and (venv / "bin" / "litellm").exists():
        return have
    if not (venv / "bin" / "python").exists():
        print(f"creating {venv} for LiteLLM ...", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    print(f"installing litellm[proxy]=={want} into {venv} (once) ...", flush=True)
    cmd = [str(venv / "bin" / "pip"), "install", "-q", "-r", str(LITELLM_REQUIREMENTS)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("WARNING: Location")]
        raise BenchError(
            f"`{shlex.join(cmd)}` failed (status {res.returncode}):\n"
            + "\n".join(lines[-15:])
            + "\n(run with --targets direct,tether to measure without LiteLLM)"
        )
    have = installed_litellm(venv)
    if have != want:
        raise BenchError(f"{venv}: litellm {have} installed, {want} wanted")
    return have


def litellm_config(upstream: str, front: str = "chat") -> str:
    """The proxy's config.yaml: one model, no callbacks, no telemetry.

    For the Messages front the model is an Anthropic one (LiteLLM passes the
    request through to the upstream's /v1/messages); otherwise an OpenAI one
    (Responses requests go to the upstream's /v1/responses as they are).
    """
    if front == "messages":
        model, base = f"anthropic/{MODEL}", upstream
    else:
        model, base = f"openai/{MODEL}", f"{upstream}/v1"
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: {model}\n"
        f"      api_base: {base}\n"
        f"      api_key: {API_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "general_settings:\n"
        "  disable_spend_logs: true\n"
    )


def tether_upstream(front: str, upstream: str) -> dict[str, str]:
    """tether's environment: the upstream, in the wire of the front being measured."""
    if front == "messages":
        return {
            "TETHER_ANTHROPIC_BASE_URL": upstream,
            "TETHER_ANTHROPIC_API_KEY": API_KEY,
            "TETHER_ANTHROPIC_MODELS": MODEL,
        }
    env = {
        "TETHER_OPENAI_BASE_URL": f"{upstream}/v1",
        "TETHER_OPENAI_API_KEY": API_KEY,
        "TETHER_OPENAI_MODELS": MODEL,
    }
    if front == "responses":
        env["TETHER_OPENAI_API"] = "responses"
    return env


#: Logging at ERROR, telemetry off, and every remote fetch LiteLLM does at start-up
#: or on a request (model cost map, blog posts, beta headers, presets, templates)
#: served from the copy bundled in the package.
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "DISABLE_ADMIN_UI": "True",
    "NO_PROXY": "*",
}


# --------------------------------------------------------------------------- the client


def completion_request(port: int, front: str = "chat") -> bytes:
    """A streamed completion's request in ``front``'s API, asking for the same answer."""
    prompt = "Count, please."
    headers = f"Authorization: Bearer {API_KEY}\r\n"
    if front == "responses":
        path = "/v1/responses"
        body = orjson.dumps({"model": MODEL, "input": prompt, "stream": True})
    elif front == "messages":
        path = "/v1/messages"
        body = orjson.dumps(
            {
                "model": MODEL,
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
            }
        )
        headers = f"x-api-key: {API_KEY}\r\nanthropic-version: 2023-06-01\r\n"
    else:
        path = "/v1/chat/completions"
        body = orjson.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
        )
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{headers}"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\nAccept-Encoding: identity\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


#: The event that ends a streamed answer, per front (Chat Completions ends with [DONE]).
_LAST_EVENT = {"responses": "response.completed", "messages": "message_stop"}


def content_of(front: str, obj: dict[str, Any]) -> str | None:
    """The answer text a streamed event of ``front`` carries, if any."""
    if front == "responses":
        return obj.get("delta") if obj.get("type") == "response.output_text.delta" else None
    if front == "messages":
        delta = obj.get("delta") if obj.get("type") == "content_block_delta" else None
        return delta.get("text") if isinstance(delta, dict) else None
    choices = obj.get("choices") or ()
    return (choices[0].get("delta") or {}).get("content") if choices else None


class StreamedCompletion(asyncio.Protocol):
    """One streamed chat completion on its own connection, parsed in data_received.

    Records the client's CLOCK_MONOTONIC time (ns) of the socket read that
    brought each content token, and the upstream's write time carried in it.
    """

    def __init__(self, request: bytes, tokens: int, front: str = "chat") -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.front = front
        self.tokens = tokens
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.sent_ns = 0
        self.arrivals: list[int] = []
        self.stamps: list[int] = []
        self.error: str | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.pending = b""  # partial chunk-size line
        self.chunk_left = 0
        self.crlf_left = 0
        self.buf = b""
        self.ended = False  # the last chunk (size 0) was seen

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.finished.done():
            return
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
                self.fail(f"HTTP {status}: {data[:300]!r}")
                return
            self.chunked = b"transfer-encoding: chunked" in head.lower()
        try:
            body = self._dechunk(data) if self.chunked else data
            if b"\r" in body:
                body = body.replace(b"\r\n", b"\n")
            self.buf += body
            while not self.finished.done():
                end = self.buf.find(b"\n\n")
                if end < 0:
                    break
                event, self.buf = self.buf[:end], self.buf[end + 2 :]
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        self._data(line[5:].strip(), now)
            if self.ended:
                self.fail(f"response ended before its end after {len(self.arrivals)} tokens")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            self.fail(f"bad stream: {type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            f"connection closed after {len(self.arrivals)} tokens" + (f": {exc}" if exc else "")
        )

    # -- parsing ------------------------------------------------------------

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
                    self.ended = True
                    break
                self.chunk_left = size
        return b"".join(out)

    def _data(self, payload: bytes, now: int) -> None:
        if payload == b"[DONE]":
            self._done()
            return
        obj = orjson.loads(payload)
        kind = obj.get("type")
        if obj.get("error") or kind in ("error", "response.failed"):
            self.fail(f"error in stream: {obj.get('error') or obj}")
            return
        if kind is not None and kind == _LAST_EVENT.get(self.front):
            self._done()
            return
        content = content_of(self.front, obj)
        if not content:
            return
        # One or more " t{i}@{ns}" pieces (a gateway may merge chunks).
        for piece in content.split():
            index, _, stamp = piece.partition("@")
            if index != f"t{len(self.arrivals)}":
                self.fail(f"token {piece!r} where t{len(self.arrivals)} was expected")
                return
            self.arrivals.append(now)
            self.stamps.append(int(stamp))

    def _done(self) -> None:
        if len(self.arrivals) != self.tokens:
            self.fail(f"the end after {len(self.arrivals)} of {self.tokens} tokens")
        else:
            self._finish(None)

    # -- control ------------------------------------------------------------

    def send(self) -> None:
        assert self.transport is not None
        self.sent_ns = time.monotonic_ns()
        self.transport.write(self.request)

    def fail(self, message: str) -> None:
        if not self.finished.done():
            self.error = message
            self._finish(message)

    def _finish(self, error: str | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()

    # -- figures ------------------------------------------------------------

    def ttft_ms(self) -> float:
        return (self.arrivals[0] - self.sent_ns) / 1e6

    def gaps_ms(self) -> list[float]:
        a = self.arrivals
        return [(a[i] - a[i - 1]) / 1e6 for i in range(1, len(a))]

    def token_ms(self) -> list[float]:
        return [(a - s) / 1e6 for a, s in zip(self.arrivals, self.stamps, strict=True)]


async def run_batch(
    cfg: Config, port: int, n: int, front: str = "chat"
) -> tuple[list[StreamedCompletion], float]:
    """``n`` concurrent streamed completions; (the completions, wall seconds).

    Every connection is opened first; then all requests are written at once.
    """
    loop = asyncio.get_running_loop()
    request = completion_request(port, front)
    calls = [StreamedCompletion(request, cfg.tokens, front) for _ in range(n)]
    budget = (cfg.ttft_ms + cfg.tokens * cfg.gap_ms) / 1000 + cfg.request_timeout_s
    try:
        async with asyncio.timeout(cfg.request_timeout_s):
            await asyncio.gather(
                *(loop.create_connection(lambda c=c: c, HOST, port) for c in calls)  # type: ignore[misc]
            )
        started = time.perf_counter()
        for c in calls:
            c.send()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await asyncio.gather(*(c.finished for c in calls))
        wall = time.perf_counter() - started
    finally:
        for c in calls:
            c.fail(f"no answer within {budget:g} s ({len(c.arrivals)} tokens)")
    return calls, wall


async def run_steady(
    cfg: Config, port: int, n: int, count: int, front: str = "chat"
) -> tuple[list[StreamedCompletion], float, int]:
    """``n`` completions kept in flight; (the ``count`` measured, wall seconds, all done).

    Worker ``i`` starts its first completion ``i/n`` of a completion's length
    after worker 0, and each starts its next one as soon as its last ends, so
    arrivals are spread evenly instead of written at once. A completion is
    measured if it starts once every worker is running and fewer than ``count``
    have been; the workers go on (unmeasured) until the measured ones are all
    done, so each of them ran with ``n`` in flight. The wall time runs from the
    first measured start to the last measured end.
    """
    loop = asyncio.get_running_loop()
    request = completion_request(port, front)
    period = (cfg.ttft_ms + cfg.tokens * cfg.gap_ms) / 1000
    budget = period + cfg.request_timeout_s
    measured: list[StreamedCompletion] = []
    in_flight = 0  # measured completions not yet ended
    chosen = 0  # measured completions started
    running = 0  # workers that have started
    total = 0
    window = [0.0, 0.0]
    all_measured = loop.create_future()

    async def one() -> StreamedCompletion:
        call = StreamedCompletion(request, cfg.tokens, front)
        try:
            async with asyncio.timeout(budget):
                await loop.create_connection(lambda: call, HOST, port)  # type: ignore[arg-type]
                call.send()
                await call.finished
        except (TimeoutError, OSError) as exc:
            call.fail(f"no answer within {budget:g} s ({len(call.arrivals)} tokens): {exc!r}")
        return call

    async def worker(i: int) -> None:
        nonlocal in_flight, chosen, running, total
        await asyncio.sleep(i * period / n)
        running += 1
        while not all_measured.done():
            measure = running == n and chosen < count
            if measure:
                if not chosen:
                    window[0] = time.perf_counter()
                chosen += 1
                in_flight += 1
            call = await one()
            total += 1
            if measure:
                measured.append(call)
                in_flight -= 1
                if chosen == count and not in_flight:
                    window[1] = time.perf_counter()
                    all_measured.set_result(None)

    await asyncio.gather(*(worker(i) for i in range(n)))
    return measured, window[1] - window[0], total


# --------------------------------------------------------------------------- statistics


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    gap: list[float] = field(default_factory=list)
    token: list[float] = field(default_factory=list)
    completions: int = 0
    failures: int = 0
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    upstream_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    #: CPU time the hypervisor stole, and all CPU time of the machine, meanwhile.
    steal_s: float = 0.0
    machine_s: float = 0.0

    def add(self, calls: Sequence[StreamedCompletion]) -> list[str]:
        errors = []
        for c in calls:
            if c.error is not None:
                self.failures += 1
                errors.append(c.error)
                continue
            self.completions += 1
            self.ttft.append(c.ttft_ms())
            self.gap += c.gaps_ms()
            self.token += c.token_ms()
        return errors

    def merge(self, other: Samples) -> None:
        self.ttft += other.ttft
        self.gap += other.gap
        self.token += other.token
        self.completions += other.completions
        self.failures += other.failures
        self.wall_s += other.wall_s
        self.server_cpu_s += other.server_cpu_s
        self.upstream_cpu_s += other.upstream_cpu_s
        self.client_cpu_s += other.client_cpu_s
        self.steal_s += other.steal_s
        self.machine_s += other.machine_s

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, _ in METRICS:
            values: list[float] = getattr(self, key)
            out[f"{key}_p50"] = percentile(values, 50)
            out[f"{key}_p99"] = percentile(values, 99)
            out[f"{key}_max"] = max(values) if values else math.nan
            out[f"{key}_n"] = len(values)
        out["completions"] = self.completions
        out["failures"] = self.failures
        per = max(1, self.completions)
        out["server_cpu_ms_per_completion"] = self.server_cpu_s * 1000 / per
        out["upstream_cpu_ms_per_completion"] = self.upstream_cpu_s * 1000 / per
        wall = self.wall_s or math.nan
        out["server_cpu_pct"] = 100 * self.server_cpu_s / wall
        out["client_cpu_pct"] = 100 * self.client_cpu_s / wall
        out["steal_pct"] = 100 * self.steal_s / self.machine_s if self.machine_s else 0
        return out


# --------------------------------------------------------------------------- driver


@dataclass
class Servers:
    upstream: ServerProcess
    gateways: dict[str, ServerProcess]
    litellm_version: str = ""

    def port(self, target: str) -> int:
        return self.upstream.port if target == "direct" else self.gateways[target].port


def gateway_process(
    name: str,
    argv: list[str],
    port: int,
    health_path: str,
    workdir: Path,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """A process of this benchmark: ready when ``health_path`` answers 200, its whole
    process tree charged (a gateway's helpers are part of its cost), logging to
    ``<name>.log`` in the run's directory."""
    return ServerProcess(
        name,
        argv,
        port,
        workdir,
        env=env or {},
        log_name=f"{name}.log",
        health_path=health_path,
        measure="tree",
    )


async def start_servers(cfg: Config, workdir: Path, litellm_version: str) -> Servers:
    up_port = free_port()
    upstream = gateway_process(
        "upstream",
        [
            sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(up_port),
            "--tokens", str(cfg.tokens), "--ttft-ms", str(cfg.ttft_ms),
            "--gap-ms", str(cfg.gap_ms), "--model", MODEL, "--exit-on-stdin-close",
        ],
        up_port,
        "/health",
        workdir,
    )  # fmt: skip
    upstream.start()
    await upstream.wait_ready(cfg.startup_timeout_s)
    servers = Servers(upstream, {}, litellm_version)
    if "tether" in cfg.targets:
        port = free_port()
        data = workdir / "tether-data"
        data.mkdir()
        tether = gateway_process(
            "tether",
            [
                cfg.tether_bin, "serve", "--host", HOST, "--port", str(port),
                "--data-dir", str(data), "--log-level", "warning",
            ],
            port,
            "/healthz",
            workdir,
            env=tether_upstream(cfg.front, upstream.base_url),
        )  # fmt: skip
        tether.start()
        servers.gateways["tether"] = tether
        await tether.wait_ready(cfg.startup_timeout_s)
    for name, front in (("passthrough", "raw"), ("passthrough-asgi", "asgi")):
        if name not in cfg.targets:
            continue
        port = free_port()
        relay = gateway_process(
            name,
            [
                sys.executable, str(BENCH_DIR / "passthrough.py"), "--port", str(port),
                "--upstream", upstream.base_url, "--front", front,
            ],
            port,
            "/health",
            workdir,
        )  # fmt: skip
        relay.start()
        servers.gateways[name] = relay
        await relay.wait_ready(cfg.startup_timeout_s)
    if "litellm" in cfg.targets:
        port = free_port()
        config = workdir / "litellm.yaml"
        config.write_text(litellm_config(upstream.base_url, cfg.front))
        litellm = gateway_process(
            "litellm",
            [
                str(cfg.litellm_venv / "bin" / "litellm"), "--config", str(config),
                "--host", HOST, "--port", str(port),
            ],
            port,
            "/health/liveliness",
            workdir,
            env=LITELLM_ENV,
        )  # fmt: skip
        litellm.start()
        servers.gateways["litellm"] = litellm
        await litellm.wait_ready(cfg.startup_timeout_s)
    return servers


async def run_target(
    cfg: Config, servers: Servers, target: str, rnd: int
) -> tuple[Samples, list[dict[str, Any]], list[str]]:
    port = servers.port(target)
    front = cfg.front
    errors: list[str] = []
    if cfg.warmup:
        calls, _ = await run_batch(cfg, port, cfg.warmup, front)
        errors += [f"{target} round {rnd} warm-up: {c.error}" for c in calls if c.error]
    total = Samples()
    batches = []
    server = servers.gateways.get(target)
    if cfg.arrivals == "steady":
        cpu_srv = server.cpu() if server else 0.0
        cpu_up = servers.upstream.cpu()
        cpu_me = self_cpu_seconds()
        mark = machine_cpu()
        started = time.perf_counter()
        calls, wall, done = await run_steady(
            cfg, port, cfg.concurrency, cfg.batches * cfg.concurrency, front
        )
        # CPU is read over the whole run, ramps included: charge the measured
        # completions their share.
        share = len(calls) / max(1, done)
        s = Samples(wall_s=(time.perf_counter() - started) * share)
        s.server_cpu_s = ((server.cpu() - cpu_srv) if server else 0.0) * share
        s.upstream_cpu_s = (servers.upstream.cpu() - cpu_up) * share
        s.client_cpu_s = (self_cpu_seconds() - cpu_me) * share
        machine = machine_cpu().since(mark)
        s.steal_s, s.machine_s = machine.steal, machine.total
        errs = s.add(calls)
        errors += [f"{target} round {rnd}: {e}" for e in errs[:3]]
        if len(errs) > 3:
            errors.append(f"{target} round {rnd}: ... {len(errs) - 3} more")
        batches.append({"round": rnd, "batch": 1, "wall_s": wall, **s.summary()})
        await asyncio.sleep(0.2)
        return s, batches, errors
    for b in range(cfg.batches):
        cpu_srv = server.cpu() if server else 0.0
        cpu_up = servers.upstream.cpu()
        cpu_me = self_cpu_seconds()
        mark = machine_cpu()
        calls, wall = await run_batch(cfg, port, cfg.concurrency, front)
        s = Samples(wall_s=wall)
        s.server_cpu_s = (server.cpu() - cpu_srv) if server else 0.0
        s.upstream_cpu_s = servers.upstream.cpu() - cpu_up
        s.client_cpu_s = self_cpu_seconds() - cpu_me
        machine = machine_cpu().since(mark)
        s.steal_s, s.machine_s = machine.steal, machine.total
        errs = s.add(calls)
        errors += [f"{target} round {rnd} batch {b + 1}: {e}" for e in errs[:3]]
        if len(errs) > 3:
            errors.append(f"{target} round {rnd} batch {b + 1}: ... {len(errs) - 3} more")
        summary = s.summary()
        batches.append({"round": rnd, "batch": b + 1, "wall_s": wall, **summary})
        if cfg.verbose:
            print(
                f"  round {rnd} {target:8} batch {b + 1}: ok {s.completions}/{len(calls)}  "
                f"ttft p50 {summary['ttft_p50']:.2f} p99 {summary['ttft_p99']:.2f}  "
                f"gap p50 {summary['gap_p50']:.2f} p99 {summary['gap_p99']:.2f}  "
                f"token p50 {summary['token_p50']:.2f} p99 {summary['token_p99']:.2f} ms",
                flush=True,
            )
        total.merge(s)
        await asyncio.sleep(0.2)  # let the last connections close
    return total, batches, errors


async def settle(servers: Servers, quiet: float = 0.05, timeout_s: float = 30.0) -> None:
    """Wait until no server uses more than ``quiet`` of a core (over 0.5 s).

    A gateway that fell behind (LiteLLM, under 50 streams) goes on working
    after its last response: the next target must not be measured against it.
    """
    procs = [servers.upstream, *servers.gateways.values()]
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = [p.cpu() for p in procs]
        await asyncio.sleep(0.5)
        busy = [(p.name, (p.cpu() - b) / 0.5) for p, b in zip(procs, before, strict=True)]
        if all(share <= quiet for _, share in busy):
            if time.monotonic() - started > 1.0:
                print(f"(servers settled after {time.monotonic() - started:.1f} s)", flush=True)
            return
    print(f"warning: servers still busy after {timeout_s:g} s: {busy}", flush=True)


async def run_all(cfg: Config, workdir: Path, litellm_version: str) -> dict[str, Any]:
    servers = await start_servers(cfg, workdir, litellm_version)
    for name, srv in [("upstream", servers.upstream), *servers.gateways.items()]:
        print(
            f"{name}: {srv.base_url} ready in {srv.startup_s:.1f} s (pids {srv.pids})", flush=True
        )
    samples = {t: Samples() for t in cfg.targets}
    per_round: dict[str, list[dict[str, Any]]] = {t: [] for t in cfg.targets}
    batches: list[dict[str, Any]] = []
    errors: list[str] = []
    for rnd in range(1, cfg.rounds + 1):
        shift = (rnd - 1) % len(cfg.targets)
        order = cfg.targets[shift:] + cfg.targets[:shift]
        for target in order:
            await settle(servers)
            s, b, errs = await run_target(cfg, servers, target, rnd)
            samples[target].merge(s)
            per_round[target].append({"round": rnd, **s.summary()})
            batches += [{"target": target, **x} for x in b]
            errors += errs
            if not cfg.verbose:
                summary = s.summary()
                print(
                    f"round {rnd} {target:8}: {s.completions} completions, "
                    f"ttft p50 {summary['ttft_p50']:.2f} / p99 {summary['ttft_p99']:.2f} ms, "
                    f"gap p50 {summary['gap_p50']:.2f} / p99 {summary['gap_p99']:.2f} ms",
                    flush=True,
                )
    startup = {
        n: srv.startup_s for n, srv in [("upstream", servers.upstream), *servers.gateways.items()]
    }
    return {
        "summary": {t: s.summary() for t, s in samples.items()},
        "per_round": per_round,
        "batches": batches,
        "startup_s": startup,
        "errors": errors,
    }


# --------------------------------------------------------------------------- report


def fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.2f}"


def added(summary: dict[str, dict[str, float]], target: str, key: str) -> float:
    if target not in summary or "direct" not in summary:
        return math.nan
    return summary[target][key] - summary["direct"][key]


def table_rows(
    cfg: Config, summary: dict[str, dict[str, float]]
) -> tuple[list[str], list[list[str]]]:
    gateways = [t for t in GATEWAYS if t in cfg.targets]
    header = ["metric (ms)", *cfg.targets, *(f"{g} adds" for g in gateways)]
    ratio = "tether" in gateways and "litellm" in gateways
    if ratio:
        header.append("tether adds / litellm adds")
    rows = []
    for key, label in METRICS:
        for q in ("p50", "p99"):
            k = f"{key}_{q}"
            row = [f"{label} {q}", *(fmt(summary[t][k]) for t in cfg.targets)]
            adds = {g: added(summary, g, k) for g in gateways}
            row += [signed(a) for a in adds.values()]
            if ratio:
                t_add, l_add = adds["tether"], adds["litellm"]
                row.append(f"{t_add / l_add:.2f}x" if l_add > 0 and t_add >= 0 else "n/a")
            rows.append(row)
    return header, rows


def goals(cfg: Config, summary: dict[str, dict[str, float]]) -> list[tuple[str, str, bool]]:
    """The issue's targets, checked on every metric.

    For the inter-token gap a gateway can be off either way (a late token makes
    its gap longer and the next one shorter; a gateway that falls behind
    delivers tokens in bursts, with gaps near 0), so what counts there is the
    size of the difference, |adds|.
    """
    out: list[tuple[str, str, bool]] = []
    if "tether" not in summary:
        return out
    for key, label in METRICS:
        size = abs if key == "gap" else (lambda v: v)
        bars = "|adds|" if key == "gap" else "adds"
        for q, limit in (("p50", GOAL_P50_MS), ("p99", GOAL_P99_MS)):
            k = f"{key}_{q}"
            t_add = added(summary, "tether", k)
            out.append(
                (
                    f"{label} {q}: tether {bars} < {limit:g} ms",
                    f"{t_add:+.2f} ms",
                    size(t_add) < limit,
                )
            )
            if "litellm" in summary:
                l_add = added(summary, "litellm", k)
                out.append(
                    (
                        f"{label} {q}: tether {bars} < LiteLLM {bars}",
                        f"{t_add:+.2f} vs {l_add:+.2f} ms",
                        size(t_add) < size(l_add),
                    )
                )
    return out


def cpu_lines(cfg: Config, summary: dict[str, dict[str, float]]) -> list[str]:
    """CPU per completion of each process while a target's timed batches ran."""
    lines = []
    for t in cfg.targets:
        s = summary[t]
        parts = []
        if t != "direct":
            parts.append(
                f"{t} {s['server_cpu_ms_per_completion']:.1f} ms per completion "
                f"({s['server_cpu_pct']:.0f}% of a core)"
            )
        parts.append(f"upstream {s['upstream_cpu_ms_per_completion']:.1f} ms per completion")
        parts.append(f"client {s['client_cpu_pct']:.0f}% of a core")
        parts.append(f"hypervisor steal {s['steal_pct']:.1f}% of the machine's CPU time")
        lines.append(f"{t}: " + ", ".join(parts))
    return lines


#: Steal time (share of all CPU time) past which the figures are flagged.
STEAL_WARNING_PCT = 2.0


def steal_warning(cfg: Config, summary: dict[str, dict[str, float]]) -> str | None:
    """A warning when the host took CPU time from this machine while it measured."""
    worst = max(summary[t]["steal_pct"] for t in cfg.targets)
    if worst <= STEAL_WARNING_PCT:
        return None
    return (
        f"the hypervisor took up to {worst:.1f}% of this machine's CPU time while it measured "
        "(steal time): the latencies are the host's as much as the servers'; measure again "
        "on a quieter host"
    )


def render_markdown(
    cfg: Config,
    info: dict[str, Any],
    started: dt.datetime,
    command: str,
    loop_name: str,
    outcome: dict[str, Any],
    header: list[str],
    rows: list[list[str]],
    cpu: list[str],
    goal_rows: list[tuple[str, str, bool]],
) -> str:
    litellm = outcome.get("litellm_version")
    title = f"gateway added latency ({cfg.front} front, {cfg.arrivals} arrivals), tether" + (
        f" vs LiteLLM {litellm}" if litellm else ""
    )
    summary = outcome["summary"]
    per_target = cfg.rounds * cfg.batches * cfg.concurrency
    failures = ", ".join(f"{t} {int(summary[t]['failures'])}" for t in cfg.targets)
    startup = ", ".join(f"{n} {s:.1f} s" for n, s in outcome["startup_s"].items())
    lines = [
        f"## {started.strftime('%Y-%m-%d %H:%M UTC')}: {title}",
        "",
        f"- Machine: {info['nproc']} CPU(s), {info['cpu_model']}, {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}; client, upstream and gateways share it.",
        f"- Software: Python {info['python']} (client: raw HTTP/1.1 on asyncio, {loop_name})"
        + (f", litellm[proxy] {litellm} in its own virtualenv" if litellm else "")
        + (f", tether commit {info['git_commit']}" if info["git_commit"] else ""),
        f"- Command: `{command}`",
        f"- Upstream: `benchmarks/upstream.py`, {cfg.tokens} content tokens per completion, "
        f"first after {cfg.ttft_ms:g} ms, then one every {cfg.gap_ms:g} ms. "
        f"Every target is asked through the {cfg.front} API, and the upstream answers in it. "
        "tether: `tether serve --data-dir <tmp>` (SQLite store) with "
        + ", ".join(
            f"`{k}={v}`"
            for k, v in tether_upstream(cfg.front, "<upstream>").items()
            if "KEY" not in k
        )
        + (
            "; LiteLLM: `litellm --config <yaml>` (one "
            f"`{'anthropic' if cfg.front == 'messages' else 'openai'}/{MODEL}` entry with "
            "`api_base` = the upstream, 1 worker, no callbacks, LITELLM_LOG=ERROR, "
            "telemetry off, bundled cost map)"
            if litellm
            else ""
        )
        + f". Server start-up: {startup}.",
        (
            f"- {cfg.concurrency} concurrent streamed completions per batch, all written at "
            f"once (`--arrivals burst`), {cfg.batches} batches per target per round"
            if cfg.arrivals == "burst"
            else f"- {cfg.concurrency} streamed completions kept in flight, starts spread "
            "evenly over one completion's length (`--arrivals steady`), "
            f"{cfg.batches * cfg.concurrency} measured per target per round"
        )
        + f" after {cfg.warmup} warm-up completions, {cfg.rounds} rounds "
        f"rotating the order of the targets: {per_target} completions per target "
        f"(failures: {failures}). "
        "Percentiles over all of a target's samples; **adds = gateway percentile minus "
        "direct percentile** (a difference of percentiles: requests of different runs "
        "cannot be paired).",
        "- Time to first token: request written -> socket read that brought the first "
        "content token. Inter-token gap: between the reads that brought consecutive content "
        'tokens (a negative "adds" there means tokens arrive bunched: the targets compare '
        "|adds| for gaps). Token latency: the upstream's clock reading just before it wrote "
        "the token (carried in the token) -> the client's read (same CLOCK_MONOTONIC).",
        "",
        format_markdown_table(header, rows),
        "",
        "CPU:",
        "",
        *[f"- {line}" for line in cpu],
    ]
    warning = steal_warning(cfg, summary)
    if warning:
        lines += ["", f"**Warning:** {warning}."]
    if goal_rows:
        lines += ["", "Targets:", ""]
        lines += [
            f"- {'met' if met else '**not met**'}: {desc} ({figures})"
            for desc, figures, met in goal_rows
        ]
    if outcome["errors"]:
        lines += ["", "Failures:", ""]
        lines += [f"- `{e.splitlines()[0]}`" for e in outcome["errors"][:20]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, ns = parse_args(argv)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    litellm_version = ensure_litellm(cfg.litellm_venv) if "litellm" in cfg.targets else ""
    started = dt.datetime.now(dt.UTC)
    info = machine_info()
    loop_factory, loop_name = client_loop(ns.no_uvloop)
    print(
        f"targets={','.join(cfg.targets)} rounds={cfg.rounds} concurrency={cfg.concurrency} "
        f"batches={cfg.batches} arrivals={cfg.arrivals} front={cfg.front} tokens={cfg.tokens} "
        f"ttft={cfg.ttft_ms:g}ms gap={cfg.gap_ms:g}ms "
        f"client loop={loop_name}" + (f" litellm={litellm_version}" if litellm_version else ""),
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-gateway-"))
    ok = False
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            outcome = runner.run(run_all(cfg, workdir, litellm_version))
        ok = not outcome["errors"]
    finally:
        kill_all_servers()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(workdir / "tether-data", ignore_errors=True)
            print(f"server logs kept in {workdir}", file=sys.stderr)
    finished = dt.datetime.now(dt.UTC)
    outcome["litellm_version"] = litellm_version

    summary = outcome["summary"]
    header, rows = table_rows(cfg, summary)
    print()
    print(
        f"{cfg.rounds} round(s) x {cfg.batches} batch(es) x {cfg.concurrency} concurrent "
        f"completions per target; adds = target percentile - direct percentile"
    )
    print(format_text_table(header, rows))
    cpu = cpu_lines(cfg, summary)
    print("\nCPU:")
    for line in cpu:
        print("  " + line)
    warning = steal_warning(cfg, summary)
    if warning:
        print(f"\nWARNING: {warning}")
    goal_rows = goals(cfg, summary)
    if goal_rows:
        print("\ntargets:")
        for desc, figures, met in goal_rows:
            print(f"  [{'met ' if met else 'MISS'}] {desc}: {figures}")
    errors: list[str] = outcome["errors"]
    if errors:
        print(f"\n{len(errors)} failure(s):", file=sys.stderr)
        for e in errors[:30]:
            print("  " + e, file=sys.stderr)

    command = command_line()
    if ns.json:
        doc = {
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "command": command,
            "client_loop": loop_name,
            "machine": info,
            "litellm": litellm_version,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
            "summary": summary,
            "per_round": outcome["per_round"],
            "batches": outcome["batches"],
            "startup_s": outcome["startup_s"],
            "goals": [{"goal": d, "figures": f, "met": m} for d, f, m in goal_rows],
            "errors": errors,
        }
        Path(ns.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nraw figures written to {ns.json}")
    if ns.markdown:
        print()
        print(
            render_markdown(
                cfg, info, started, command, loop_name, outcome, header, rows, cpu, goal_rows
            )
        )
    return 1 if errors else 0


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
