"""Session listings are pages of one key's index; keys have limits on what they hold.

On main ``GET /v1/sessions`` loaded every key's records on every call; now it
reads one page of the caller's own index. With keys, ``--max-sessions`` and
``--max-streams`` bound what one key can pile up (429 past them).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.server import TetherServer
from tether.sessions.service import RECORDS, SessionRecord
from tether.store.sqlite import SqliteStore

KEY_A, KEY_B = "tk-list-a-5e1f", "tk-list-b-0c3d"
TEXT = {"content-type": "text/plain"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("listing")
    env = {**os.environ, "TETHER_API_KEYS": f"{KEY_A},{KEY_B}"}
    args = ["--max-sessions", "30", "--max-streams", "3"]
    with TetherServer(base / "data", log_path=base / "server.log", env=env, extra_args=args) as srv:
        yield srv


def client(server: TetherServer, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"authorization": f"Bearer {key}"}, timeout=10
    )


def _all_pages(c: httpx.Client, limit: int, **params: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        data = c.get("/v1/sessions", params=query).json()
        assert len(data["sessions"]) <= limit
        ids += [s["id"] for s in data["sessions"]]
        cursor = data["next_cursor"]
        if cursor is None:
            return ids


def test_a_listing_comes_in_pages_latest_first_and_only_the_callers(
    server: TetherServer,
) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        mine = [a.post("/v1/sessions", json={"title": f"a{i}"}).json()["id"] for i in range(7)]
        theirs = [b.post("/v1/sessions", json={}).json()["id"] for _ in range(3)]
        a.patch(f"/v1/sessions/{mine[2]}", json={"title": "touched"})  # now the latest
        listed = _all_pages(a, limit=3)
        assert listed == [mine[2], *reversed([m for m in mine if m != mine[2]])]
        assert not set(theirs) & set(listed)
        assert a.get("/v1/sessions", params={"limit": "1001"}).status_code == 422
        assert a.get("/v1/sessions", params={"limit": "0"}).status_code == 422
        for sid in theirs:
            b.delete(f"/v1/sessions/{sid}")


def test_archived_sessions_are_listed_only_when_asked_for(server: TetherServer) -> None:
    with client(server, KEY_B) as b:
        kept, shelved = (b.post("/v1/sessions", json={}).json()["id"] for _ in range(2))
        assert b.post(f"/v1/sessions/{shelved}/archive").status_code == 200
        assert _all_pages(b, limit=1) == [kept]
        assert set(_all_pages(b, limit=1, archived="true")) == {kept, shelved}
        b.patch(f"/v1/sessions/{shelved}", json={"archived": False})
        assert set(_all_pages(b, limit=5)) == {kept, shelved}
        for sid in (kept, shelved):
            assert b.delete(f"/v1/sessions/{sid}").status_code == 204
        assert _all_pages(b, limit=5) == []


def test_a_key_at_its_session_limit_gets_429_and_others_do_not(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        while len(_all_pages(a, limit=100, archived="true")) < 30:
            a.post("/v1/sessions", json={})
        refused = a.post("/v1/sessions", json={})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exceeded"
        gateway = a.post(
            "/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert gateway.status_code == 429
        assert gateway.json()["error"]["type"] == "insufficient_quota"
        chat = a.post(
            "/v1/aisdk/chat",
            json={"id": "over", "messages": [{"id": "u", "role": "user", "parts": [
                {"type": "text", "text": "hi"}]}]},
        )  # fmt: skip
        assert chat.status_code == 429
        other = b.post("/v1/sessions", json={})
        assert other.status_code == 201
        b.delete(f"/v1/sessions/{other.json()['id']}")
        # Deleting makes room.
        victim = _all_pages(a, limit=1)[0]
        assert a.delete(f"/v1/sessions/{victim}").status_code == 204
        assert a.post("/v1/sessions", json={}).status_code == 201


def test_a_key_at_its_stream_limit_gets_429_until_one_goes(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        for name in ("s1", "s2"):
            assert a.put(f"/v1/stream/{name}", headers=TEXT).status_code == 201
        assert a.put("/v1/stream/brief", headers={**TEXT, "Stream-TTL": "1"}).status_code == 201
        refused = a.put("/v1/stream/s4", headers=TEXT)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert a.put("/v1/stream/s1", headers=TEXT).status_code == 200  # exists: creates nothing
        fork = a.put("/v1/stream/f", headers={**TEXT, "Stream-Forked-From": "s1"})
        assert fork.status_code == 429
        assert b.put("/v1/stream/s4", headers=TEXT).status_code == 201  # another key's room
        time.sleep(2.2)  # "brief" expires: the limit check finds it gone
        assert a.put("/v1/stream/s4", headers=TEXT).status_code == 201
        assert a.put("/v1/stream/s5", headers=TEXT).status_code == 429
        assert a.delete("/v1/stream/s2").status_code == 204
        assert a.put("/v1/stream/s5", headers=TEXT).status_code == 201


def test_sessions_stored_before_listings_were_indexed_are_listed(tmp_path: Path) -> None:
    """A data dir from before the index: its sessions are filed at start, once."""
    data = tmp_path / "data"

    async def old_sessions() -> list[str]:
        store = SqliteStore(data / "tether.db")
        await store.open()
        ids = []
        for i in range(3):
            now = 1_700_000_000.0 + i
            record = SessionRecord(f"ses_old{i}", None, f"old {i}", None, None, None, now, now)
            await store.put_record(RECORDS, record.id, record.to_bytes())
            ids.append(record.id)
        await store.aclose()
        return ids

    ids = asyncio.run(old_sessions())
    with TetherServer(data, log_path=tmp_path / "s.log") as srv:
        listed = httpx.get(srv.base_url + "/v1/sessions").json()["sessions"]
    assert [s["id"] for s in listed] == list(reversed(ids))
