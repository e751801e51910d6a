"""With TETHER_API_KEYS set, no key reads, writes or forks another key's data.

Each rule is checked against a real ``tether serve`` on a real SQLite file and
on a real Redis: a key's raw streams live in a namespace of its own, a
session's stream is readable and forkable by its owner only, and a read token
is opaque and reads exactly one resource until it expires or its key goes.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.server import ServerError, TetherServer
from redis_server import running_redis
from tether.api.auth import key_identity

KEY_A, KEY_B = "tk-alpha-5d1c0b7e", "tk-bravo-9e2a6f13"
SECRET = "s" * 32
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


def _env(keys: str = f"{KEY_A},{KEY_B}", **extra: str) -> dict[str, str]:
    return {**os.environ, "TETHER_API_KEYS": keys, "TETHER_SECRET": SECRET, **extra}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp(f"isolation-{request.param}")
    if request.param == "sqlite":
        with TetherServer(base / "data", log_path=base / "server.log", env=_env()) as srv:
            yield srv
        return
    with running_redis(base / "redis") as redis:
        store = f"{redis.url()}?prefix=iso:"
        with TetherServer(
            base / "data", store=store, log_path=base / "server.log", env=_env()
        ) as srv:
            yield srv


def client(server: TetherServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=10)


def _session_with_answer(c: httpx.Client) -> str:
    sid = c.post("/v1/sessions", json={}).json()["id"]
    c.post(f"/v1/sessions/{sid}/messages", json={"content": "secret plans"})
    deadline = time.monotonic() + 10
    while c.get(f"/v1/sessions/{sid}").json()["status"] != "idle":
        assert time.monotonic() < deadline, "the demo run did not finish"
        time.sleep(0.05)
    return sid


def test_a_fork_of_another_keys_session_is_not_found(server: TetherServer) -> None:
    """The fork's source is authorized like a GET of it: 404, in both spellings."""
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        sid = _session_with_answer(a)
        for source in (f"sessions/{sid}", f"/v1/stream/sessions/{sid}"):
            forked = b.put(
                f"/v1/stream/steal-{sid}-{len(source)}",
                headers={**JSON, "Stream-Forked-From": source},
            )
            assert forked.status_code == 404, forked.text
            assert forked.json()["error"]["code"] == "not_found"
            assert b.get(f"/v1/stream/steal-{sid}-{len(source)}?offset=-1").status_code == 404


def test_a_fork_of_another_keys_gateway_session_is_not_found(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        done = a.post(
            "/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "private"}]},
        )
        sid = done.headers["x-tether-session-id"]
        forked = b.put("/v1/stream/g", headers={**JSON, "Stream-Forked-From": f"sessions/{sid}"})
        assert forked.status_code == 404


def test_a_fork_does_not_outlive_the_source_sessions_ownership(server: TetherServer) -> None:
    """After A deletes its session, B still cannot fork what is left of it."""
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        sid = _session_with_answer(a)
        mine = a.put("/v1/stream/mine", headers={**JSON, "Stream-Forked-From": f"sessions/{sid}"})
        assert mine.status_code == 201
        assert a.delete(f"/v1/sessions/{sid}").status_code == 204
        forked = b.put("/v1/stream/late", headers={**JSON, "Stream-Forked-From": f"sessions/{sid}"})
        assert forked.status_code == 404


def test_the_owner_of_a_session_may_fork_its_stream(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        sid = _session_with_answer(a)
        name = f"branch-of-{sid}"
        forked = a.put(
            f"/v1/stream/{name}", headers={**JSON, "Stream-Forked-From": f"sessions/{sid}"}
        )
        assert forked.status_code == 201, forked.text
        events = a.get(f"/v1/stream/{name}?offset=-1").json()
        assert any(e.get("type") == "user-message" for e in events)
        assert b.get(f"/v1/stream/{name}?offset=-1").status_code == 404


def test_another_keys_raw_stream_is_not_found_on_every_method(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        assert a.put("/v1/stream/notes", headers=TEXT, content=b"from A").status_code in (200, 201)
        assert b.get("/v1/stream/notes?offset=-1").status_code == 404
        assert b.get("/v1/stream/notes?offset=-1&live=long-poll").status_code == 404
        assert b.get("/v1/stream/notes?offset=-1&live=sse").status_code == 404
        assert b.head("/v1/stream/notes").status_code == 404
        assert b.post("/v1/stream/notes", headers=TEXT, content=b"from B").status_code == 404
        closing = b.post("/v1/stream/notes", headers={"Stream-Closed": "true"})
        assert closing.status_code == 404
        assert b.delete("/v1/stream/notes").status_code == 404
        fork = b.put("/v1/stream/copy", headers={**TEXT, "Stream-Forked-From": "notes"})
        assert fork.status_code == 404
        # A's stream is untouched by all of that.
        read = a.get("/v1/stream/notes?offset=-1")
        assert read.status_code == 200 and read.content == b"from A"
        assert "stream-closed" not in read.headers


def test_the_same_path_is_a_different_stream_for_each_key(server: TetherServer) -> None:
    """B's PUT of A's path creates B's own stream; neither sees the other's data."""
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        assert a.put("/v1/stream/shared-name", headers=TEXT, content=b"A1").status_code == 201
        made = b.put("/v1/stream/shared-name", headers=JSON)
        assert made.status_code == 201  # a stream of its own, of another content type
        assert b.post("/v1/stream/shared-name", headers=JSON, content=b'{"b":1}').is_success
        assert a.get("/v1/stream/shared-name?offset=-1").content == b"A1"
        assert b.get("/v1/stream/shared-name?offset=-1").json() == [{"b": 1}]
        assert b.delete("/v1/stream/shared-name").status_code == 204
        assert a.get("/v1/stream/shared-name?offset=-1").content == b"A1"


def test_error_messages_name_streams_as_the_caller_does(server: TetherServer) -> None:
    with client(server, KEY_A) as a:
        missing = a.get("/v1/stream/nowhere/at-all?offset=-1")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "stream not found: nowhere/at-all"
        assert "key_" not in missing.text and "~keys" not in missing.text


def test_a_read_token_is_opaque(server: TetherServer) -> None:
    with client(server, KEY_A) as a:
        sid = a.post("/v1/sessions", json={}).json()["id"]
        token = a.post(f"/v1/sessions/{sid}/read-token").json()["token"]
    for part in token.split("."):
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        for leak in (sid.encode(), sid.removeprefix("ses_").encode(), b"key_", b"session"):
            assert leak not in decoded and leak.decode() not in token


def test_a_read_token_reads_its_one_stream_and_nothing_else(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, None) as browser:
        a.put("/v1/stream/feed", headers=TEXT, content=b"hello")
        a.put("/v1/stream/other", headers=TEXT, content=b"not yours")
        minted = a.post("/v1/read-tokens", json={"stream": "feed"})
        assert minted.status_code == 200, minted.text
        token = minted.json()["token"]
        assert browser.get(f"/v1/stream/feed?offset=-1&token={token}").content == b"hello"
        assert browser.head(f"/v1/stream/feed?token={token}").status_code == 200
        assert browser.get(f"/v1/stream/other?offset=-1&token={token}").status_code == 404
        appended = browser.post(f"/v1/stream/feed?token={token}", headers=TEXT, content=b"x")
        assert appended.status_code == 404
        assert browser.delete(f"/v1/stream/feed?token={token}").status_code == 404
        assert browser.get(f"/v1/sessions?token={token}").status_code == 401
    with client(server, KEY_B) as b:
        assert b.post("/v1/read-tokens", json={"stream": "feed"}).status_code == 404


def test_a_read_token_stops_at_its_expiry(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, None) as browser:
        a.put("/v1/stream/brief", headers=TEXT, content=b"soon gone")
        token = a.post("/v1/read-tokens", json={"stream": "brief", "ttl": 1}).json()["token"]
        assert browser.get(f"/v1/stream/brief?offset=-1&token={token}").status_code == 200
        time.sleep(1.2)
        late = browser.get(f"/v1/stream/brief?offset=-1&token={token}")
        assert late.status_code == 401
        assert late.json()["error"]["message"] == "read token expired"


def test_a_revoked_keys_tokens_stop_working(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with (
        TetherServer(data, log_path=tmp_path / "a.log", env=_env()) as srv,
        client(srv, KEY_B) as b,
    ):
        sid = b.post("/v1/sessions", json={}).json()["id"]
        token = b.post(f"/v1/sessions/{sid}/read-token").json()["token"]
        assert b.get(f"/v1/sessions/{sid}?token={token}").status_code == 200
    # The same secret, so tokens still open; but key B is gone.
    with (
        TetherServer(data, log_path=tmp_path / "b.log", env=_env(keys=KEY_A)) as srv,
        client(srv, None) as browser,
    ):
        assert browser.get(f"/v1/sessions/{sid}?token={token}").status_code == 401
        assert browser.get(f"/v1/stream/sessions/{sid}?token={token}").status_code == 401


def test_a_short_tether_secret_stops_the_server_at_start(tmp_path: Path) -> None:
    srv = TetherServer(
        tmp_path / "data", log_path=tmp_path / "s.log", env=_env(TETHER_SECRET="too-short")
    )
    try:
        with pytest.raises(ServerError, match="exited with code"):
            srv.start(ready_timeout=15)
    finally:
        srv.stop()  # were it to start after all, the test must not leave it running
    assert "TETHER_SECRET must be at least 32 bytes" in srv.output()
    assert "too-short" not in srv.output().split("\n", 1)[1]


def test_shared_streams_are_shared_but_sessions_and_private_streams_stay_private(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with (
        TetherServer(data, log_path=tmp_path / "private.log", env=_env()) as srv,
        client(srv, KEY_A) as a,
    ):
        a.put("/v1/stream/diary", headers=TEXT, content=b"private")
        sid = _session_with_answer(a)
    shared = ["--shared-streams"]
    with (
        TetherServer(data, log_path=tmp_path / "s.log", env=_env(), extra_args=shared) as srv,
        client(srv, KEY_A) as a,
        client(srv, KEY_B) as b,
    ):
        a.put("/v1/stream/board", headers=TEXT, content=b"A")
        assert b.post("/v1/stream/board", headers=TEXT, content=b"B").status_code == 204
        assert a.get("/v1/stream/board?offset=-1").content == b"AB"
        assert b.get(f"/v1/stream/sessions/{sid}?offset=-1").status_code == 404
        fork = b.put("/v1/stream/x", headers={**JSON, "Stream-Forked-From": f"sessions/{sid}"})
        assert fork.status_code == 404
        # What A wrote in its private namespace cannot be named from the shared one.
        private = f"~keys/{key_identity(KEY_A)}/diary"
        for c in (a, b):
            refused = c.get(f"/v1/stream/{private}?offset=-1")
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "reserved_path"
            fork = c.put("/v1/stream/y", headers={**TEXT, "Stream-Forked-From": private})
            assert fork.status_code == 400
            assert c.get("/v1/stream/y?offset=-1").status_code == 404
