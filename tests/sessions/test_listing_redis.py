"""A page of a session listing on Redis costs one read of its records, not one per session.

With 100,000 sessions a page of 100 was 100 HGETs (each a round trip's share of
CPU in redis-py); it is one HMGET. Counted by Redis itself (INFO commandstats)
under a real ``tether serve``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from helpers.server import TetherServer
from redis_server import running_redis

PAGE = 10


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_listing_page_reads_its_records_in_one_command(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with running_redis(tmp_path / "redis") as server_redis:
        client = redis.Redis.from_url(server_redis.url())
        with (
            TetherServer(tmp_path / "data", store=server_redis.url()) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            made = {http.post("/v1/sessions", json={}).json()["id"] for _ in range(3 * PAGE)}
            hget, hmget = calls(client, "hget"), calls(client, "hmget")
            listed: list[str] = []
            cursor = None
            for _ in range(3):
                params = {"limit": PAGE} | ({"cursor": cursor} if cursor else {})
                page = http.get("/v1/sessions", params=params).json()
                listed += [s["id"] for s in page["sessions"]]
                cursor = page["next_cursor"]
            assert set(listed) == made and len(listed) == 3 * PAGE
            assert calls(client, "hmget") - hmget == 3
            assert calls(client, "hget") - hget < PAGE  # not one a session
        client.close()
