"""JSON bodies are parsed within bounds, and crafted input is refused (4xx) with nothing stored.

A body within ``--max-body`` must not cost the server a multiple of gigabytes
or a long stall: values, nesting and messages per append are bounded before
and while parsing. And what used to answer 500 (deep nesting, lone
surrogates, huge integers, a far expiry, control characters in a name) now
answers 4xx without changing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.server import TetherServer

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("hostile-json")
    with TetherServer(base / "data", log_path=base / "server.log") as srv:
        yield srv


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url + "/v1/stream/", timeout=30) as c:
        yield c


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def _unchanged(client: httpx.Client, name: str, before: httpx.Response) -> None:
    after = client.get(name, params={"offset": "-1"})
    assert after.content == before.content
    assert after.headers["stream-next-offset"] == before.headers["stream-next-offset"]


def test_a_million_element_array_is_refused_without_a_memory_spike(
    server: TetherServer, client: httpx.Client
) -> None:
    """Main peaked at 4.3 GB for this 2 MB body; now it is 413 and the peak barely moves."""
    client.put("million", headers=JSON)
    before, peak = client.get("million", params={"offset": "-1"}), _peak_rss_mib(server.pid)
    body = b"[" + b",".join([b"1"] * 1_000_000) + b"]"
    r = client.post("million", content=body, headers=JSON)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "json_too_large"
    assert _peak_rss_mib(server.pid) - peak < 64
    _unchanged(client, "million", before)


def test_an_append_holds_at_most_max_batch_messages(client: httpx.Client) -> None:
    client.put("batch", headers=JSON)
    r = client.post("batch", content=b"[" + b",".join([b"{}"] * 10_001) + b"]", headers=JSON)
    assert r.status_code == 413
    assert "10000 messages" in r.json()["error"]["message"]
    ok = client.post("batch", content=b"[" + b",".join([b"{}"] * 10_000) + b"]", headers=JSON)
    assert ok.status_code == 204


def test_text_full_of_commas_is_not_mistaken_for_many_values(client: httpx.Client) -> None:
    client.put("prose", headers=JSON)
    text = "word, " * 300_000  # 300k commas, one value
    r = client.post("prose", json={"text": text})
    assert r.status_code == 204, r.text
    assert client.get("prose", params={"offset": "-1"}).json() == [{"text": text}]


@pytest.mark.parametrize(
    ("body", "status", "what"),
    [
        (b"[" * 100 + b"]" * 100, 400, "nesting past the depth limit"),
        (b"[" * 5000 + b"]" * 5000, 400, "nesting past the parser's own stack"),
        (b'{"a": "\\ud800"}', 400, "a lone surrogate"),
        (b'["\xff\xfe"]', 400, "bytes that are not UTF-8"),
        (b"[NaN]", 400, "NaN"),
    ],
)
def test_crafted_json_is_refused_and_stores_nothing(
    client: httpx.Client, body: bytes, status: int, what: str
) -> None:
    client.put("crafted", headers=JSON)
    before = client.get("crafted", params={"offset": "-1"})
    r = client.post("crafted", content=body, headers=JSON)
    assert r.status_code == status, (what, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    _unchanged(client, "crafted", before)


def test_integers_past_64_bits_are_stored_exactly(client: httpx.Client) -> None:
    """JSON has no integer limit: a stream keeps what it was given, digit for digit."""
    client.put("ints", headers=JSON)
    big = b'{"n":123456789012345678901234567890,"m":-98765432109876543210987654321}'
    assert client.post("ints", content=big, headers=JSON).status_code == 204
    assert client.get("ints", params={"offset": "-1"}).content == b"[" + big + b"]"


def test_an_expiry_after_the_year_9999_is_refused(client: httpx.Client) -> None:
    far = client.put("far", headers={**JSON, "Stream-Expires-At": "9999-12-31T23:00:00-05:00"})
    assert far.status_code == 400
    assert client.head("far").status_code == 404  # nothing was created
    near = client.put("near", headers={**JSON, "Stream-Expires-At": "9999-12-31T00:00:00Z"})
    assert near.status_code == 201
    assert client.head("near").status_code == 200


@pytest.mark.parametrize("name", ["a%0D%0ALocation:%20x", "tab%09in", "nul%00x", "del%7F"])
def test_a_stream_name_with_control_characters_is_refused(client: httpx.Client, name: str) -> None:
    r = client.put(name, headers=JSON)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_path"
