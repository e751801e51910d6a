"""The SDK's own retry of a mutating call whose connection was cut: one turn, the first answer.

A real ``tether serve`` behind a loopback TCP proxy that forwards the request
and drops the connection before its answer comes back: the input was placed,
the client cannot know it, and sends it again with the same Idempotency-Key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from client.proxy import TcpProxy
from helpers.server import TetherServer
from tether.client import AsyncTether, Tether
from tether.client._http import Backoff, retry_delay, worth_retrying
from tether.client.errors import APIError, TetherConnectionError, error_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("sdk-retry")
    with TetherServer(base / "data", log_path=base / "server.log") as srv:
        yield srv


@pytest.fixture
def proxy(server: TetherServer) -> Iterator[TcpProxy]:
    with TcpProxy(server.host, server.port) as p:
        yield p


def log_of(server: TetherServer, sid: str, kind: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.base_url}/v1/stream/sessions/{sid}", params={"offset": "-1"})
    assert r.status_code == 200, r.text
    return [e for e in r.json() if e["type"] == kind]


def test_a_send_whose_answer_is_cut_is_sent_again_and_makes_one_turn(
    server: TetherServer, proxy: TcpProxy
) -> None:
    with Tether(proxy.url) as client:
        sid = client.sessions.create().id
        proxy.drop_answers_to = f"POST /v1/sessions/{sid}/messages".encode()
        run = client.send(sid, "/count 3")
        assert proxy.dropped_answers == 1  # the first send was cut for real
        assert run.text() == "1 2 3"
    assert [e["message_id"] for e in log_of(server, sid, "user-message")] == [run.message_id]
    assert [e["run_id"] for e in log_of(server, sid, "run-start")] == [run.run_id]


async def test_the_async_client_sends_a_cut_tool_result_again_and_it_counts_once(
    server: TetherServer, proxy: TcpProxy
) -> None:
    async with AsyncTether(proxy.url) as client:
        sid = (await client.sessions.create()).id
        run = await client.send(sid, '/tool lookup {"q": 1}')
        proxy.drop_answers_to = f"POST /v1/sessions/{sid}/tool-results".encode()
        result = await run.result(tools={"lookup": lambda q: {"found": q}})
        assert proxy.dropped_answers == 1
        assert result.status == "complete"
    assert len(log_of(server, sid, "tool-result")) == 1


def test_a_send_cut_every_time_gives_up_after_max_retries_having_made_one_turn(
    server: TetherServer, proxy: TcpProxy
) -> None:
    with Tether(proxy.url, max_retries=2) as client:
        sid = client.sessions.create().id
        proxy.drop_answers_to = f"POST /v1/sessions/{sid}/messages".encode()
        proxy.drop_answers = 10
        with pytest.raises(TetherConnectionError):
            client.send(sid, "hi")
        assert proxy.dropped_answers == 3  # the send and its two retries
    assert len(log_of(server, sid, "user-message")) == 1


def error(status: int, code: str, headers: dict[str, str] | None = None) -> APIError:
    body = json.dumps({"error": {"code": code, "message": "m"}}).encode()
    return error_for(status, body, headers)


def test_what_is_worth_a_retry_and_how_long_to_wait() -> None:
    assert worth_retrying(error(503, "unavailable"))
    assert worth_retrying(error(507, "insufficient_storage"))
    assert worth_retrying(error(409, "idempotency_in_progress"))
    assert not worth_retrying(error(409, "idempotency_key_reused"))
    assert not worth_retrying(error(500, "error"))  # what a failure left is unknown
    assert not worth_retrying(error(400, "invalid_input"))
    backoff = Backoff(base=0.05, cap=2.0)
    assert retry_delay(backoff, error(503, "unavailable", {"Retry-After": "2"})) == 2.0
    assert retry_delay(backoff, error(503, "unavailable", {"Retry-After": "3600"})) == 5.0
    assert retry_delay(Backoff(base=0.05), None) <= 0.05
