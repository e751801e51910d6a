"""Liveness and readiness, as a load balancer sees them.

``/healthz`` says the process answers; ``/readyz`` says it can serve: its store
answers in time. On main ``/healthz`` said ok while Redis was down, so a load
balancer kept sending requests that could only fail.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from helpers.server import TetherServer
from redis_server import RedisServer


def _status(server: TetherServer, path: str) -> int:
    return httpx.get(server.base_url + path, timeout=5).status_code


def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_readiness_follows_the_store_while_liveness_stays_ok(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with TetherServer(tmp_path / "data", store=redis.url(), log_path=tmp_path / "s.log") as srv:
            assert (_status(srv, "/healthz"), _status(srv, "/readyz")) == (200, 200)
            redis.kill()
            _until(lambda: _status(srv, "/readyz") == 503)
            answer = httpx.get(srv.base_url + "/readyz", timeout=5)
            assert answer.json()["reason"] == "store unavailable"
            assert answer.headers["retry-after"] == "1"
            assert _status(srv, "/healthz") == 200
            redis.start()
            _until(lambda: _status(srv, "/readyz") == 200)
    finally:
        redis.stop()


def test_a_sqlite_server_is_ready_once_it_answers(tmp_path: Path) -> None:
    with TetherServer(tmp_path / "data", log_path=tmp_path / "s.log") as srv:
        ready = httpx.get(srv.base_url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
