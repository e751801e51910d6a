"""With TETHER_API_KEYS set, sessions belong to the key that made them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from api.sse import events
from helpers.server import TetherServer

KEY_A, KEY_B = "tk-alpha-7f3e9c1d", "tk-bravo-2b8a4e6f"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("auth")
    env = {**os.environ, "TETHER_API_KEYS": f"{KEY_A},{KEY_B}"}
    srv = TetherServer(base / "data", log_path=base / "server.log", env=env)
    with srv:
        yield srv


def client(server: TetherServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=10)


def test_requests_without_a_valid_key_are_refused(server: TetherServer) -> None:
    with client(server, None) as anon, client(server, "wrong-key") as wrong:
        for c in (anon, wrong):
            assert c.get("/v1/sessions").status_code == 401
            assert c.post("/v1/sessions", json={}).status_code == 401
            assert c.put("/v1/stream/x", headers={"Content-Type": "text/plain"}).status_code == 401


def test_the_model_list_needs_a_key_like_the_rest_of_openais_api(server: TetherServer) -> None:
    with client(server, None) as anon, client(server, "wrong-key") as wrong:
        missing, refused = anon.get("/v1/models"), wrong.get("/v1/models")
    assert (missing.status_code, refused.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape
    assert refused.json()["error"]["code"] == "invalid_api_key"
    with client(server, KEY_A) as a:
        listed = a.get("/v1/models").json()
    assert listed["object"] == "list"
    assert "demo" in [m["id"] for m in listed["data"]]


def test_a_session_is_invisible_to_other_keys(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        sid = a.post("/v1/sessions", json={"title": "mine"}).json()["id"]
        assert a.get(f"/v1/sessions/{sid}").status_code == 200
        assert b.get(f"/v1/sessions/{sid}").status_code == 404
        assert b.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}).status_code == 404
        assert b.post(f"/v1/sessions/{sid}/cancel", json={}).status_code == 404
        assert b.get(f"/v1/sessions/{sid}/events").status_code == 404
        assert b.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"}).status_code == 404
        assert a.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"}).status_code == 200
        assert sid not in [s["id"] for s in b.get("/v1/sessions").json()["sessions"]]
        assert sid in [s["id"] for s in a.get("/v1/sessions").json()["sessions"]]


def test_a_read_token_reads_one_session_and_nothing_else(server: TetherServer) -> None:
    with client(server, KEY_A) as a, client(server, None) as browser:
        sid = a.post("/v1/sessions", json={}).json()["id"]
        other = a.post("/v1/sessions", json={}).json()["id"]
        run = a.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 3 1"}).json()
        token = a.post(f"/v1/sessions/{sid}/read-token").json()["token"]
        got = [
            e for _, e in events(
                browser, f"/v1/sessions/{sid}/events?token={token}", until_run_end=run["run_id"]
            )
        ]  # fmt: skip
        assert any(e["type"] == "run-end" for e in got)
        assert browser.get(f"/v1/sessions/{other}/events?token={token}").status_code == 404
        sent = browser.post(f"/v1/sessions/{sid}/messages?token={token}", json={"content": "x"})
        assert sent.status_code == 401
        assert browser.get(f"/v1/sessions/{sid}/events?token={token}x").status_code == 401


def test_keys_never_appear_in_responses_or_logs(server: TetherServer) -> None:
    with client(server, KEY_A) as a:
        sid = a.post("/v1/sessions", json={}).json()["id"]
        bodies = [
            a.get(f"/v1/sessions/{sid}"),
            a.get("/v1/sessions"),
            a.get(f"/v1/stream/sessions/{sid}", params={"offset": "-1"}),
            a.post(f"/v1/sessions/{sid}/messages", json={"content": ""}),
        ]
        for r in bodies:
            dump = r.text + str(r.headers)
            assert KEY_A not in dump and KEY_B not in dump
    log = server.output()
    assert KEY_A not in log and KEY_B not in log
