"""Lease metrics on Redis: a replica takes over a dead one's run; renewals fail while Redis is away.

Two real ``tether serve`` replicas share a real ``redis-server``; each serves
``/metrics`` on a ``--metrics-port`` of its own, which answers while Redis is
down (and then says ``tether_ready 0``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers.server import TetherServer, find_free_port
from helpers.session_events import Events, start
from redis_server import running_redis

TIMEOUT = 30.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(url)
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


async def scrape_until(url: str, check: Callable[[Samples], bool]) -> Samples:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        samples = await scrape(url)
        if check(samples):
            return samples
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def replica(tmp: Path, name: str, redis_url: str) -> tuple[TetherServer, str]:
    port = find_free_port()
    server = TetherServer(
        tmp / name,
        store=redis_url,
        log_path=tmp / f"{name}.log",
        extra_args=["--lease-ttl", "1", "--metrics-port", str(port)],
    )
    return server, f"http://127.0.0.1:{port}/metrics"


async def test_a_takeover_and_failed_renewals_are_counted(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis:
        a, _ = replica(tmp_path, "a", redis.url())
        b, b_metrics = replica(tmp_path, "b", redis.url())
        with a, b:
            async with (
                httpx.AsyncClient(base_url=a.base_url, timeout=TIMEOUT) as on_a,
                httpx.AsyncClient(base_url=b.base_url, timeout=TIMEOUT) as on_b,
            ):
                sid, run_id, events = await start(
                    on_a, {"model": "demo"}, {"content": "/count 300 50"}
                )
                await events.aclose()  # followed on B: A is killed
                events = Events(on_b, sid)
                try:
                    await events.until(lambda e: e["type"] == "part-delta")
                    a.kill()  # A drove the run: B's reaper takes it over once the lease lapses
                    await events.until(lambda e: e["type"] == "run-resume")
                    took_over = await scrape(b_metrics)
                    assert value(took_over, "tether_lease_takeovers_total") == 1
                    assert value(took_over, "tether_runs_started_total", model="demo") == 0
                    assert (await on_b.post(f"/v1/sessions/{sid}/cancel", json={})).is_success
                    assert (await events.run_end(run_id))["reason"] == "cancelled"
                finally:
                    await events.aclose()
                ended = await scrape(b_metrics)
                assert (
                    value(ended, "tether_runs_ended_total", model="demo", reason="cancelled") == 1
                )

                # B drives a run of its own; with Redis away its lease cannot be renewed.
                sid, _, events = await start(on_b, {"model": "demo"}, {"content": "/count 300 50"})
                try:
                    await events.until(lambda e: e["type"] == "part-delta")
                    assert value(await scrape(b_metrics), "tether_ready") == 1
                    redis.kill()
                    away = await scrape_until(
                        b_metrics,
                        lambda m: value(m, "tether_lease_renew_failures_total", reason="error") > 0,
                    )
                    assert value(away, "tether_ready") == 0
                finally:
                    await events.aclose()
                redis.start()
                await scrape_until(b_metrics, lambda m: value(m, "tether_ready") == 1)
