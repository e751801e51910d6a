"""Model discovery in a real ``tether serve``, over HTTP, in front of the fake upstream.

The server is configured with the upstream's URL and key and no model list:
it lists what the upstream lists, runs sessions on those models, and keeps
the key out of its log whatever the upstream answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer

from .fake_upstreams import FakeUpstream

KEY = "sk-upstream-9b2e4d6f8a1c3e5d"
MODELS = "/v1/models"


def serve(tmp_path: Path, fake: FakeUpstream, *args: str, **env: str) -> TetherServer:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    base |= {"TETHER_OPENAI_BASE_URL": fake.openai_base_url, "TETHER_OPENAI_API_KEY": KEY}
    return TetherServer(
        tmp_path / "data", log_path=tmp_path / "server.log", env=base | env, extra_args=args
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        upstream.models = ["llama3.2", "qwen3"]
        yield upstream


async def listed(c: httpx.AsyncClient) -> list[str]:
    r = await c.get(MODELS)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


async def run_answer(c: httpx.AsyncClient, body: dict[str, Any], text: str) -> dict[str, Any]:
    """Create a session, send ``text``, and return the run's run-end event."""
    r = await c.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    run = (await c.post(f"/v1/sessions/{sid}/messages", json={"content": text})).json()
    async with c.stream("GET", f"/v1/sessions/{sid}/events") as events:
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["type"] == "run-end" and event["run_id"] == run["run_id"]:
                    return dict(event)
    raise AssertionError("the event stream ended before the run did")


async def test_the_upstreams_models_are_listed_shown_and_usable(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    async with (
        serve(tmp_path, fake) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        assert (await listed(c))[:3] == ["demo", "openai/llama3.2", "openai/qwen3"]
        end = await run_answer(c, {"model": "openai/qwen3"}, "Hello?")
        unlisted = await c.post("/v1/sessions", json={"model": "openai/gpt-4o"})
    assert end["reason"] == "complete"
    (chat,) = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert chat.body["model"] == "qwen3"
    assert unlisted.status_code == 400 and "openai/qwen3" in unlisted.text
    output = server.output()
    assert "tether: models: demo, openai/llama3.2, openai/qwen3" in output
    assert KEY not in output


async def test_an_explicit_model_list_wins_and_the_upstream_is_never_asked(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    server = serve(tmp_path, fake, "--models-refresh", "0.05", TETHER_OPENAI_MODELS="gpt-4o")
    async with server, httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        assert (await listed(c))[:2] == ["demo", "openai/gpt-4o"]
        assert (await run_answer(c, {"model": "openai/gpt-4o"}, "Hi"))["reason"] == "complete"
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]


async def test_a_failing_discovery_keeps_the_list_and_logs_once_without_the_key(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    server = serve(tmp_path, fake, "--models-refresh", "0.05")
    async with server, httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        fake.fail_next(4, 401, message=f"Incorrect API key provided: {KEY}.")
        await fake.wait_requests(MODELS, 5)  # the first round, then four failed ones
        assert (await listed(c))[:3] == ["demo", "openai/llama3.2", "openai/qwen3"]
        fake.models = ["gpt-5"]
        # Rounds run one after the other: the one after the next has seen the new list.
        asked = sum(r.path == MODELS for r in fake.requests)
        await fake.wait_requests(MODELS, asked + 2)
        assert (await listed(c))[:2] == ["demo", "openai/gpt-5"]
    output = server.output()
    assert output.count("could not list the upstream's models") == 1
    assert output.count("the upstream's models are listed again") == 1
    assert "HTTP 401" in output
    assert KEY not in output
