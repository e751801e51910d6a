"""The official Durable Streams conformance suite against ``tether serve --store redis://``.

The same run and the same verdict as test_conformance.py (zero failures, zero skips,
the reserved subscription APIs included, a prompt exit on SIGTERM), with the server
keeping its streams in a real ``redis-server`` started for this test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import test_conformance as conformance

from helpers.server import ServerFactory
from redis_server import RedisServer, running_redis

pytestmark = pytest.mark.conformance


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def test_conformance_suite_passes_against_redis_store(
    tether_server: ServerFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Every conformance test passes, subscriptions included, and SIGTERM is prompt."""
    conformance.run_conformance(tether_server, tmp_path, store=redis_server.url(0))
