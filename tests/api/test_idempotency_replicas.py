"""Idempotency-Key across two ``tether serve`` replicas on one real Redis.

The key's claim and answer live in Redis, so a retry sent to another replica
gets the first answer, duplicates racing on both replicas make one turn, and
the expired answers are swept from Redis.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from helpers.server import ServerFactory, TetherServer
from redis_server import RedisServer, running_redis

RETENTION = 1.5


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"idem-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def replicas(
    tether_server: ServerFactory,
    tmp_path: Path,
    redis_server: RedisServer,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> list[TetherServer]:
    monkeypatch.setenv("TETHER_IDEMPOTENCY_RETENTION", str(RETENTION))  # the option's variable
    url = f"{redis_server.url()}?prefix={prefix}"
    return [tether_server(tmp_path / f"replica-{i}", store=url) for i in range(2)]


def post(server: TetherServer, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"idempotency-key": key} if key else {}
    return httpx.post(server.base_url + path, json=body, headers=headers, timeout=30)


def user_messages(server: TetherServer, sid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.base_url}/v1/stream/sessions/{sid}", params={"offset": "-1"})
    assert r.status_code == 200, r.text
    return [e for e in r.json() if e["type"] == "user-message"]


def test_a_send_retried_on_another_replica_makes_one_turn_and_gets_the_first_answer(
    replicas: list[TetherServer],
) -> None:
    a, b = replicas
    sid = post(a, "/v1/sessions", {}).json()["id"]
    key = str(uuid.uuid4())
    first = post(a, f"/v1/sessions/{sid}/messages", {"content": "hi"}, key)
    assert first.status_code == 202, first.text
    again = post(b, f"/v1/sessions/{sid}/messages", {"content": "hi"}, key)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = post(b, f"/v1/sessions/{sid}/messages", {"content": "ho"}, key)
    assert other.status_code == 409, other.text
    assert len(user_messages(b, sid)) == 1


def test_duplicates_racing_on_two_replicas_make_one_turn(replicas: list[TetherServer]) -> None:
    sid = post(replicas[0], "/v1/sessions", {}).json()["id"]
    key = str(uuid.uuid4())
    n = 16
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []

    def send(server: TetherServer) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            barrier.wait()
            answers.append(
                c.post(f"/v1/sessions/{sid}/messages", json={"content": "once"},
                       headers={"idempotency-key": key})
            )  # fmt: skip

    threads = [threading.Thread(target=send, args=(replicas[i % 2],)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == n
    accepted = [r for r in answers if r.status_code == 202]
    assert accepted and len({r.text for r in accepted}) == 1
    assert all(
        r.status_code == 202 or r.json()["error"]["code"] == "idempotency_in_progress"
        for r in answers
    ), [r.text for r in answers]
    assert len(user_messages(replicas[1], sid)) == 1


def test_expired_answers_are_swept_from_redis_and_their_keys_used_again(
    replicas: list[TetherServer], redis_server: RedisServer, prefix: str
) -> None:
    a, b = replicas
    sid = post(a, "/v1/sessions", {}).json()["id"]
    key = str(uuid.uuid4())
    first = post(a, f"/v1/sessions/{sid}/messages", {"content": "one"}, key)
    assert first.status_code == 202, first.text
    sent_at = time.monotonic()
    db = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        records = f"{prefix}r:idempotency"
        assert db.hlen(records) == 1
        # Each replica sweeps once per retention: the answer is gone within two.
        deadline = sent_at + 3 * RETENTION + 2
        while db.hlen(records) or db.zcard(f"{prefix}x:idempotency-expiry"):
            assert time.monotonic() < deadline, "the expired answer was not swept"
            time.sleep(0.05)
    finally:
        db.close()
    later = post(b, f"/v1/sessions/{sid}/messages", {"content": "two"}, key)
    assert later.status_code == 202, later.text
    assert later.json()["message_id"] != first.json()["message_id"]
    assert len(user_messages(b, sid)) == 2
