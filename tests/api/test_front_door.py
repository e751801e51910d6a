"""What every request passes first: Host, Origin, CORS, body size, JSON bodies, rate.

Without keys tether trusts whoever reaches its port, so it must not be reachable
by a web page the user happens to visit (DNS rebinding, cross-site requests).
With keys, CORS is configurable and the same on every route. Each rule is
checked over real HTTP against a real ``tether serve``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers.server import TetherServer

KEY_A, KEY_B = "tk-front-a-41c9", "tk-front-b-77d2"
APP = "https://app.example"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    """Auth off, one allowed origin, a small body limit."""
    base = tmp_path_factory.mktemp("front-open")
    args = ["--cors-origins", APP, "--max-body", str(1024 * 1024)]
    with TetherServer(base / "data", log_path=base / "server.log", extra_args=args) as srv:
        yield srv


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("front-keyed")
    env = {**os.environ, "TETHER_API_KEYS": f"{KEY_A},{KEY_B}"}
    args = ["--max-body", str(1024 * 1024), "--rate-limit", "5"]
    with TetherServer(base / "data", log_path=base / "server.log", env=env, extra_args=args) as srv:
        yield srv


def _sessions(server: TetherServer) -> list[str]:
    r = httpx.get(server.base_url + "/v1/sessions")
    return [s["id"] for s in r.json()["sessions"]]


# -- auth off: only this server's Host, only its own pages ---------------------------


def test_a_rebound_host_name_is_refused_without_keys(open_server: TetherServer) -> None:
    """A DNS-rebinding page reaches the port under its own name: every route refuses it."""
    evil = {"host": f"attacker.example:{open_server.port}"}
    with httpx.Client(base_url=open_server.base_url, headers=evil) as c:
        for method, path in [
            ("GET", "/v1/sessions"),
            ("POST", "/v1/sessions"),
            ("GET", "/v1/stream/x?offset=-1"),
            ("PUT", "/v1/stream/x"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/"),
        ]:
            r = c.request(method, path, json={})
            assert r.status_code == 400, (method, path, r.text)
            assert r.json()["error"]["code"] == "invalid_host"
    assert httpx.get(open_server.stream_url("x") + "?offset=-1").status_code == 404  # not created
    with pytest.raises(InvalidStatus):
        connect(
            f"ws://127.0.0.1:{open_server.port}/v1/sessions/x/ws",
            additional_headers=evil,
            open_timeout=5,
        )


def test_loopback_names_are_answered_without_keys(open_server: TetherServer) -> None:
    for host in (
        "localhost",
        "127.0.0.1",
        f"localhost:{open_server.port}",
        "[::1]:1",
        "a.localhost",
    ):
        r = httpx.get(open_server.base_url + "/healthz", headers={"host": host})
        assert r.status_code == 200, host


def test_a_page_of_another_origin_is_refused_without_keys(open_server: TetherServer) -> None:
    before = _sessions(open_server)
    page = {"origin": EVIL}
    with httpx.Client(base_url=open_server.base_url, headers=page) as c:
        simple = c.post("/v1/stream/drop", content=b"x", headers={"content-type": "text/plain"})
        assert simple.status_code == 403
        assert simple.json()["error"]["code"] == "forbidden_origin"
        assert c.post("/v1/sessions", json={}).status_code == 403
        assert c.get("/v1/sessions").status_code == 403
        assert c.get("/v1/stream/x?offset=-1").status_code == 403
    assert _sessions(open_server) == before
    with pytest.raises(InvalidStatus):
        connect(
            f"ws://127.0.0.1:{open_server.port}/v1/sessions/x/ws",
            additional_headers=page,
            open_timeout=5,
        )


def test_the_servers_own_pages_are_answered_without_cors_headers(
    open_server: TetherServer,
) -> None:
    own = {"origin": open_server.base_url}
    r = httpx.post(open_server.base_url + "/v1/sessions", json={}, headers=own)
    assert r.status_code == 201
    assert "access-control-allow-origin" not in r.headers


def test_no_cors_is_granted_to_other_origins_without_keys(open_server: TetherServer) -> None:
    """A preflight from another origin is answered, but grants nothing."""
    r = httpx.options(
        open_server.stream_url("x"),
        headers={"origin": EVIL, "access-control-request-method": "POST"},
    )
    assert r.status_code == 204
    assert "access-control-allow-origin" not in r.headers


def test_json_routes_refuse_what_a_page_may_send_without_asking(
    open_server: TetherServer,
) -> None:
    """text/plain and forms are 'simple requests' a browser sends cross-site without preflight."""
    before = _sessions(open_server)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        for path in ("/v1/sessions", "/v1/chat/completions", "/v1/aisdk/chat"):
            r = httpx.post(
                open_server.base_url + path,
                content=b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}',
                headers={"content-type": content_type},
            )
            assert r.status_code == 415, (content_type, path, r.text)
    assert _sessions(open_server) == before
    # A stream's body is data of the stream's own type: text/plain is fine there.
    made = httpx.put(open_server.stream_url("plain"), headers={"content-type": "text/plain"})
    assert made.status_code in (200, 201)


def test_an_allowed_origin_gets_the_same_cors_on_every_route(open_server: TetherServer) -> None:
    app = {"origin": APP}
    with httpx.Client(base_url=open_server.base_url, headers=app) as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        responses = [
            c.get(f"/v1/sessions/{sid}"),
            c.get(f"/v1/stream/sessions/{sid}?offset=-1"),
            c.get("/v1/models"),
            c.get("/v1/sessions/nope"),  # errors too, or the page cannot read them
            c.options(
                "/v1/sessions",
                headers={
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type",
                },
            ),
        ]
    for r in responses:
        assert r.headers["access-control-allow-origin"] == APP, r.request.url
        assert "Origin" in r.headers.get("vary", "")


# -- keys: CORS on every route; rates per key ---------------------------------------


def test_with_keys_any_origin_may_use_the_session_api(keyed_server: TetherServer) -> None:
    r = httpx.get(
        keyed_server.base_url + "/v1/sessions",
        headers={"origin": EVIL, "authorization": f"Bearer {KEY_A}"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "X-Tether-Session-Id" in r.headers["access-control-expose-headers"]


def test_each_key_has_its_own_request_rate(keyed_server: TetherServer) -> None:
    """--rate-limit 5: a burst of 10, then 429 with Retry-After; the other key is untouched."""
    with httpx.Client(base_url=keyed_server.base_url) as c:
        a = {"authorization": f"Bearer {KEY_A}"}
        statuses = [c.get("/v1/sessions", headers=a).status_code for _ in range(30)]
        assert statuses.count(429) >= 10, statuses
        limited = next(
            r for r in (c.get("/v1/sessions", headers=a) for _ in range(5)) if r.status_code == 429
        )
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        b = c.get("/v1/sessions", headers={"authorization": f"Bearer {KEY_B}"})
        assert b.status_code == 200
        time.sleep(1.0)
        assert c.get("/v1/sessions", headers=a).status_code == 200  # refilled


def test_a_key_sent_as_x_api_key_has_its_rate_too(keyed_server: TetherServer) -> None:
    """Anthropic's clients send the key as x-api-key: the same key, the same rate."""
    with httpx.Client(base_url=keyed_server.base_url) as c:
        a = {"x-api-key": KEY_A}
        statuses = [c.get("/v1/models", headers=a).status_code for _ in range(30)]
        assert statuses.count(429) >= 10, statuses
        assert statuses[0] == 200
        b = c.get("/v1/models", headers={"x-api-key": KEY_B})
        assert b.status_code == 200


# -- bodies: refused while they arrive, on every route -------------------------------


def _declare_huge_body(server: TetherServer, path: str, headers: dict[str, str]) -> bytes:
    """Send a head announcing 300 MB and no body; return what the server answers."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Type: application/json\r\nContent-Length: {300 << 20}\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head.encode())
        return _read_response(sock, sock.recv(4096))


def _read_response(sock: socket.socket, answer: bytes) -> bytes:
    """The whole response that ``answer`` begins (its body may come in a later segment)."""
    while b"\r\n\r\n" not in answer and (more := sock.recv(4096)):
        answer += more
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
         if line.startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length and (more := sock.recv(4096)):
        body += more
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    "path", ["/v1/sessions", "/v1/sessions/x/messages", "/v1/aisdk/chat", "/v1/read-tokens"]
)
def test_a_declared_body_over_the_limit_is_refused_before_auth_or_parsing(
    keyed_server: TetherServer, path: str
) -> None:
    answer = _declare_huge_body(keyed_server, path, {})  # no key either: 413 comes first
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer


def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc")


def _post_chunked(server: TetherServer, path: str, total: int) -> bytes:
    """Stream ``total`` bytes as chunks until the server answers or closes."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        sent = 0
        while sent < total:
            try:
                answer = sock.recv(4096)
                if answer:
                    sock.setblocking(True)
                    return _read_response(sock, answer)
            except BlockingIOError:
                pass
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += 1 << 20
        sock.setblocking(True)
        return _read_response(sock, sock.recv(4096))


def test_chunked_bodies_over_the_limit_cost_the_server_no_more_than_the_limit(
    keyed_server: TetherServer,
) -> None:
    """Four unauthenticated 300 MB chunked posts: refused, and the peak RSS barely moves."""
    before = _rss_peak_kib(keyed_server.pid)
    for path in ("/v1/sessions", "/v1/aisdk/chat", "/v1/chat/completions", "/v1/stream/x"):
        answer = _post_chunked(keyed_server, path, 300 << 20)
        assert answer.startswith(b"HTTP/1.1 413") or answer.startswith(b"HTTP/1.1 401"), answer[
            :120
        ]
    grown_mib = (_rss_peak_kib(keyed_server.pid) - before) / 1024
    assert grown_mib < 32, f"peak RSS grew by {grown_mib:.0f} MiB for a 1 MiB limit"
