"""Long sessions and many sessions: cold and warm snapshots, listing pages, start-up.

For each store (SQLite, Redis) the store is seeded in this process, through
the session service of the code under test: one key with ``--sessions``
sessions (the listing's load), and one session per ``--events`` figure, made
of turns as a run writes them (a user message, a streamed answer of
``--deltas`` deltas, every other turn a tool call and its result). Then, each
round, a ``tether serve`` is started on that store and measured:

- start-up: from the process's start to its first healthy answer;
- cold snapshot: the first ``GET /v1/sessions/{id}`` of each long session
  after the start (an empty fold cache), after one request to a small session
  (the server's own first-request costs are not the fold's);
- warm snapshot: the same request again, median of ``--warm`` requests;
- listing: ``GET /v1/sessions?limit=--page`` following ``next_cursor``,
  ``--pages`` requests, p50 and p99.

``--baseline-src DIR`` adds a target: the same server run from another
checkout's ``src`` (e.g. ``git archive <commit> src | tar -x -C DIR``) with
the same virtualenv, alternating with this one round by round, for an A/B in
one run on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

import harness
from tether.api.auth import key_identity
from tether.sessions import events as ev
from tether.sessions.events import event, new_id
from tether.sessions.service import SessionService
from tether.store.factory import open_store

KEY = "bench-sessions-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--stores", default="sqlite,redis", help="sqlite and/or redis")
    p.add_argument("--events", default="10000,50000", help="events of each long session")
    p.add_argument("--deltas", type=int, default=100, help="deltas of each answer")
    p.add_argument("--sessions", type=int, default=100_000, help="sessions of the key")
    p.add_argument("--page", type=int, default=100, help="sessions per listing page")
    p.add_argument("--pages", type=int, default=500, help="listing requests per round")
    p.add_argument("--warm", type=int, default=20, help="warm snapshot requests")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline-src", type=Path, help="another checkout's src, for an A/B")
    p.add_argument("--tether-extra-args", default="", help="more `tether serve` options")
    p.add_argument("--redis-bin", default=shutil.which("redis-server") or "redis-server")
    p.add_argument("--json", type=Path, help="write the raw figures here")
    return p.parse_args()


def long_session(n: int, deltas: int) -> list[dict[str, Any]]:
    """``n`` events of turns as a run writes them (see the module's docstring)."""
    out: list[dict[str, Any]] = []
    parent: str | None = None
    turn = 0
    while len(out) < n:
        turn += 1
        asked, answer, run = new_id("msg"), new_id("msg"), new_id("run")
        text = {"type": "text", "text": f"question {turn} " * 8}
        out += [
            event(ev.USER_MESSAGE, message_id=asked, parent_id=parent, parts=[text]),
            event(ev.RUN_START, run_id=run, trigger="user-message", model="demo"),
            event(ev.MESSAGE_START, run_id=run, message_id=answer, parent_id=asked),
            event(ev.PART_START, run_id=run, message_id=answer, part_id=f"{answer}:1"),
        ]
        out += [
            event(ev.PART_DELTA, run_id=run, part_id=f"{answer}:1", delta=f"word{i} ")
            for i in range(deltas)
        ]
        out.append(event(ev.PART_END, run_id=run, part_id=f"{answer}:1"))
        if turn % 2 == 0:
            call, part = new_id("call"), f"{answer}:2"
            out += [
                event(ev.PART_START, run_id=run, message_id=answer, part_id=part,
                      kind=ev.TOOL_CALL, tool_call_id=call, tool_name="lookup"),
                event(ev.PART_END, run_id=run, part_id=part, value={"q": "x" * 40}),
                event(ev.TOOL_RESULT, run_id=run, tool_call_id=call, output={"a": "y" * 60}),
            ]  # fmt: skip
        usage = {"input_tokens": 100, "output_tokens": deltas}
        out += [
            event(ev.MESSAGE_END, run_id=run, message_id=answer, usage=usage),
            event(ev.RUN_END, run_id=run, reason=ev.COMPLETE),
        ]
        parent = answer
    return out[:n]


async def seed(spec: str, data_dir: Path, ns: argparse.Namespace) -> dict[str, str]:
    """Fill the store; returns what to request: ``small`` and ``events-<n>`` session ids."""
    store = open_store(spec, data_dir)
    await store.open()
    service = SessionService(store)
    await service.build_indexes()  # an empty store: marks it indexed (no migration at start)
    owner = key_identity(KEY)
    made: dict[str, str] = {}
    try:
        started = time.monotonic()
        for n in [int(x) for x in ns.events.split(",")]:
            record = await service.create(owner=owner, model="demo", agent=None, system=None,
                                          title=f"{n} events")  # fmt: skip
            events = long_session(n, ns.deltas)
            for i in range(0, n, 100):  # a run appends as it streams: many small appends
                await service.append(record.id, events[i : i + 100])
            made[f"events-{n}"] = record.id
        await service.aclose()  # the checkpoints the appends started
        small = await service.create(owner=owner, model="demo", agent=None, system=None,
                                     title="small")  # fmt: skip
        made["small"] = small.id
        left = ns.sessions - len(made)
        while left > 0:
            batch = min(left, 256)
            await asyncio.gather(*(
                service.create(owner=owner, model="demo", agent=None, system=None, title=None)
                for _ in range(batch)
            ))  # fmt: skip
            left -= batch
        print(f"  seeded {spec.split(':')[0]} in {time.monotonic() - started:.0f} s",
              file=sys.stderr)  # fmt: skip
    finally:
        await store.aclose()
    return made


class RedisProcess(harness.ServerProcess):
    """redis-server, ready when it answers PING."""

    async def healthy(self) -> bool:
        client = aioredis.Redis(host=harness.HOST, port=self.port, socket_timeout=5.0)
        try:
            return bool(await client.ping())
        except RedisError:
            return False
        finally:
            await client.aclose()


def server(name: str, spec: str, data_dir: Path, work: Path, src: Path | None,
           extra: list[str]) -> harness.ServerProcess:  # fmt: skip
    port = harness.free_port()
    python = harness.REPO_ROOT / ".venv" / "bin" / "python"
    argv = [str(python), "-m", "tether.cli.main", "serve", "--host", harness.HOST,
            "--port", str(port), "--data-dir", str(data_dir), "--store", spec, *extra]  # fmt: skip
    env = {"TETHER_API_KEYS": KEY, "TETHER_RATE_LIMIT": "0"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    work.mkdir(parents=True, exist_ok=True)
    return harness.ServerProcess(name, argv, port, work, env=env, log_name=f"{name}.log")


async def measure(proc: harness.ServerProcess, made: dict[str, str],
                  ns: argparse.Namespace) -> dict[str, float]:  # fmt: skip
    out: dict[str, float] = {}
    proc.start()
    try:
        await proc.wait_ready(120)
        out["startup_s"] = proc.startup_s
        async with aiohttp.ClientSession(proc.base_url, headers=HEADERS) as http:

            async def get(path: str, **params: Any) -> tuple[float, Any]:
                t0 = time.perf_counter()
                async with http.get(path, params=params) as r:
                    body = await r.read()
                    assert r.status == 200, (r.status, body[:200])
                return time.perf_counter() - t0, body

            await get(f"/v1/sessions/{made['small']}")
            for name, sid in made.items():
                if name.startswith("events-"):
                    out[f"cold_{name}_ms"] = (await get(f"/v1/sessions/{sid}"))[0] * 1e3
                    warm = [(await get(f"/v1/sessions/{sid}"))[0] for _ in range(ns.warm)]
                    out[f"warm_{name}_ms"] = harness.percentile(warm, 50) * 1e3
            took: list[float] = []
            cursor: str | None = None
            for _ in range(ns.pages):
                params: dict[str, Any] = {"limit": ns.page}
                if cursor is not None:
                    params["cursor"] = cursor
                seconds, body = await get("/v1/sessions", **params)
                took.append(seconds)
                cursor = json.loads(body)["next_cursor"]
            out["list_p50_ms"] = harness.percentile(took, 50) * 1e3
            out["list_p99_ms"] = harness.percentile(took, 99) * 1e3
    finally:
        proc.stop()
    return out


async def run(ns: argparse.Namespace, root: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    extra = ns.tether_extra_args.split()
    targets: list[tuple[str, Path | None]] = [("tether", None)]
    if ns.baseline_src is not None:
        targets.append(("baseline", ns.baseline_src.resolve()))
    for store in ns.stores.split(","):
        redis = None
        if store == "redis":
            (root / "redis").mkdir()
            port = harness.free_port()
            argv = [ns.redis_bin, "--port", str(port), "--bind", harness.HOST, "--dir",
                    str(root / "redis"), "--save", "", "--appendonly", "no"]  # fmt: skip
            redis = RedisProcess("redis", argv, port, root / "redis")
            redis.start()
            await redis.wait_ready(30)
            spec = f"redis://{harness.HOST}:{port}/0"
        else:
            spec = "sqlite"
        try:
            data_dir = root / f"data-{store}"
            print(f"seeding {store}", file=sys.stderr)
            made = await seed(spec, data_dir, ns)
            rows: dict[str, list[dict[str, float]]] = {t: [] for t, _ in targets}
            for r in range(ns.rounds):
                order = targets if r % 2 == 0 else targets[::-1]  # alternate who goes first
                for name, src in order:
                    proc = server(name, spec, data_dir, root / "work" / store, src, extra)
                    got = await measure(proc, made, ns)
                    said = ", ".join(f"{k} {v:.1f}" for k, v in got.items())
                    print(f"  {store} round {r + 1} {name}: {said}", file=sys.stderr)
                    rows[name].append(got)
            figures[store] = {
                name: {k: harness.over_rounds([g[k] for g in got]) for k in got[0]}
                for name, got in rows.items()
            }
        finally:
            if redis is not None:
                redis.stop()
    return figures


def main() -> int:
    ns = parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    try:
        figures = asyncio.run(run(ns, root))
    finally:
        harness.kill_all_servers()
        shutil.rmtree(root, ignore_errors=True)
    header = ["store / target", *next(iter(next(iter(figures.values())).values())).keys()]
    rows = [
        [f"{store} / {name}", *(f"{f['median']:.1f}" for f in got.values())]
        for store, targets in figures.items()
        for name, got in targets.items()
    ]
    print(harness.format_text_table(header, rows))
    print(f"(medians over {ns.rounds} rounds; ms, startup in s) {harness.command_line()}")
    if ns.json is not None:
        ns.json.write_text(json.dumps({"figures": figures, "machine": harness.machine_info()}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
