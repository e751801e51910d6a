"""Subscription metrics on ``/metrics`` (its own port), parsed: wakes by type, webhook
deliveries by outcome, subscriptions by status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.server import ServerFactory, find_free_port

from .harness import WAIT, Api, Receiver, receiver_fixture

WAKE = "wakes"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_until(url: str, check: Callable[[Samples], bool]) -> Samples:
    """``/metrics`` parsed, once ``check`` accepts it."""
    deadline = asyncio.get_running_loop().time() + WAIT
    async with httpx.AsyncClient(timeout=10) as c:
        while True:
            r = await c.get(url)
            assert r.status_code == 200, r.text
            samples = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(r.text)
                for s in family.samples
            }
            if check(samples):
                return samples
            assert asyncio.get_running_loop().time() < deadline, f"never reached: {samples}"
            await asyncio.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for state in receiver_fixture():
        yield state


async def test_wakes_deliveries_and_statuses_are_counted(
    tether_server: ServerFactory, receiver: Receiver, tmp_path: Path
) -> None:
    port = find_free_port()
    server = tether_server(
        tmp_path / "data", extra_args=("--webhook-allow-loopback", "--metrics-port", str(port))
    )
    url = f"http://127.0.0.1:{port}/metrics"
    api = Api(server)
    try:
        receiver.answers = [(500, {})]  # the first delivery fails; its retry is done
        receiver.default = (200, {"done": True})
        hook = {"type": "webhook", "streams": ["events/h"], "webhook": {"url": receiver.url}}
        assert (await api.put_sub("hook", hook)).status_code == 201
        await api.create_stream(WAKE)
        pull = {"type": "pull-wake", "streams": ["events/p"], "wake_stream": WAKE}
        assert (await api.put_sub("pull", pull)).status_code == 201
        samples = await scrape_until(
            url, lambda s: value(s, "tether_subscriptions", status="active") == 2
        )
        assert value(samples, "tether_subscriptions", status="failed") == 0
        await api.create_stream("events/h", {"n": 1})
        await receiver.next()
        # Failed, its retry about a second later.
        await scrape_until(url, lambda s: value(s, "tether_subscriptions", status="failed") == 1)
        await receiver.next()
        await api.create_stream("events/p", {"n": 1})
        await api.wakes(WAKE)
        samples = await scrape_until(
            url,
            lambda s: (
                value(s, "tether_webhook_deliveries_total", outcome="done") == 1
                and value(s, "tether_subscriptions", status="active") == 2
            ),
        )
        assert value(samples, "tether_webhook_deliveries_total", outcome="failed") == 1
        assert value(samples, "tether_subscription_wakes_total", type="webhook") == 2
        assert value(samples, "tether_subscription_wakes_total", type="pull-wake") == 1
    finally:
        await api.aclose()
