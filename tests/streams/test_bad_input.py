"""Bad input gets a clear 4xx with a JSON error body, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from helpers.server import ServerFactory, TetherServer

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("bad-input"))
    try:
        yield factory(extra_args=["--max-body", "1024"])
    finally:
        factory.stop_all()


def snapshot(client: httpx.Client, url: str) -> tuple[int, str | None, bytes]:
    r = client.get(url, params={"offset": "-1"})
    return r.status_code, r.headers.get("stream-next-offset"), r.content


CASES = [
    ("POST", {"content": b"{not json"}, JSON, 400, "malformed JSON"),
    ("POST", {"content": b"[]"}, JSON, 400, "empty JSON array"),
    ("POST", {"content": b"x"}, {"Content-Type": "text/plain"}, 409, "wrong content type"),
    ("POST", {"content": b""}, JSON, 400, "empty body"),
    ("POST", {"content": b"{}"}, {}, 400, "missing content type"),
    ("POST", {"content": b"[" + b"1," * 600 + b"1]"}, JSON, 413, "body over the limit"),
    (
        "POST",
        {"content": b"{}"},
        {**JSON, "Producer-Id": "p", "Producer-Epoch": "0"},
        400,
        "partial producer headers",
    ),
    (
        "POST",
        {"content": b"{}"},
        {**JSON, "Producer-Id": "p", "Producer-Epoch": "x", "Producer-Seq": "0"},
        400,
        "non-integer producer epoch",
    ),
    ("PUT", {}, {**JSON, "Stream-TTL": "1.5"}, 400, "malformed TTL"),
    ("PUT", {}, {"Content-Type": "text/plain"}, 409, "re-create with another content type"),
    ("GET", {"params": {"offset": "banana"}}, {}, 400, "malformed offset"),
    (
        "GET",
        {"params": {"offset": "0000000000000000_0000000000009999"}},
        {},
        400,
        "offset past the tail",
    ),
    ("GET", {"params": {"offset": "-1", "live": "forever"}}, {}, 400, "unknown live mode"),
    ("GET", {"params": {"live": "sse"}}, {}, 400, "live read without offset"),
    ("PATCH", {"content": b"{}"}, JSON, 405, "unsupported method"),
]


@pytest.mark.parametrize(
    ("method", "kwargs", "headers", "status", "why"), CASES, ids=[c[4] for c in CASES]
)
def test_bad_request_is_refused_with_json_error_and_changes_nothing(
    server: TetherServer,
    method: str,
    kwargs: dict[str, object],
    headers: dict[str, str],
    status: int,
    why: str,
) -> None:
    url = server.stream_url(f"bad-{abs(hash(why))}")
    with httpx.Client(timeout=10) as client:
        assert client.put(url, headers=JSON, content=b'[{"keep": 1}]').status_code == 201
        before = snapshot(client, url)

        r = client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]

        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] and error["message"], error
        assert snapshot(client, url) == before


def test_unknown_stream_is_404_for_every_method(server: TetherServer) -> None:
    url = server.stream_url("no-such-stream")
    with httpx.Client(timeout=10) as client:
        for method in ("GET", "HEAD", "POST", "DELETE"):
            r = client.request(method, url, headers=JSON, content=b"{}")
            assert r.status_code == 404, (method, r.text)


def test_path_traversal_segments_are_refused(server: TetherServer) -> None:
    with httpx.Client(timeout=10) as client:
        r = client.put(server.base_url + "/v1/stream/a/%2E%2E/b", headers=JSON)
        assert r.status_code == 400


def test_server_keeps_serving_after_bad_requests(server: TetherServer) -> None:
    url = server.stream_url("still-serving")
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            client.post(url, headers=JSON, content=b"{oops")
        assert client.put(url, headers=JSON).status_code == 201
        assert client.post(url, headers=JSON, content=b'{"ok": true}').status_code == 204
        assert client.get(url, params={"offset": "-1"}).json() == [{"ok": True}]
