"""Stop on disconnect: a gateway completion nobody reads is cancelled, its upstream aborted.

tether runs as a real child process with ``--gateway-detach-grace 1`` in front
of a local upstream speaking OpenAI's streaming wire, which stalls mid-answer
until told to go on and records a client that hangs up on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from providers.fake_upstreams import FakeUpstream, Script

GRACE = 1.0
BODY = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "Write a long essay."}],
    "stream": True,
}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    async with FakeUpstream() as fake:
        env = {
            **os.environ,
            "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
            "TETHER_OPENAI_API_KEY": "sk-upstream-detach",
            "TETHER_OPENAI_MODELS": "gpt-4o-mini",
        }
        async with TetherServer(
            tmp_path / "data",
            log_path=tmp_path / "server.log",
            env=env,
            extra_args=["--gateway-detach-grace", str(GRACE)],
        ) as server:
            yield fake, server


async def first_chunk(r: httpx.Response) -> dict[str, Any]:
    async for line in r.aiter_lines():
        if line.startswith("data: "):
            return json.loads(line[6:])
    raise AssertionError("the stream ended before its first chunk")


async def run_end(c: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    async with c.stream("GET", f"/v1/sessions/{sid}/events", params={"offset": "-1"}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["type"] == "run-end":
                    return event
    raise AssertionError("the session's stream ended before its run did")


async def test_closing_a_streamed_completion_aborts_its_upstream_after_the_grace(setup) -> None:
    fake, server = setup
    fake.script = Script(text="never finished " * 20, hang_after=2)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        async with c.stream("POST", "/v1/chat/completions", json=BODY) as r:
            sid = r.headers["x-tether-session-id"]
            assert (await first_chunk(r))["choices"][0]["delta"]["role"] == "assistant"
        left = time.monotonic()
        await fake.wait_disconnect(timeout=GRACE + 5)
        waited = time.monotonic() - left
        end = await run_end(c, sid)
    assert end["reason"] == "cancelled"
    assert fake.disconnects == 1
    assert GRACE * 0.8 <= waited < GRACE + 4, waited


#: The other fronts' streamed requests, and the event each streams once the upstream has.
OTHER_FRONTS = {
    "responses": (
        "/v1/responses",
        {"model": "openai/gpt-4o-mini", "input": "Write a long essay.", "stream": True},
        "response.output_text.delta",
    ),
    "messages": (
        "/v1/messages",
        {
            "model": "openai/gpt-4o-mini",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Write a long essay."}],
            "stream": True,
        },
        "content_block_delta",
    ),
}


@pytest.mark.parametrize("front", list(OTHER_FRONTS))
async def test_closing_a_stream_of_any_front_aborts_its_upstream(setup, front: str) -> None:
    fake, server = setup
    fake.script = Script(text="never finished " * 20, hang_after=2)
    path, body, streaming = OTHER_FRONTS[front]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        async with c.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            sid = r.headers["x-tether-session-id"]
            async for line in r.aiter_lines():
                if line == f"event: {streaming}":
                    break
        await fake.wait_disconnect(timeout=GRACE + 5)
        end = await run_end(c, sid)
    assert end["reason"] == "cancelled"


async def test_a_detached_completion_runs_to_its_end_after_its_client_leaves(setup) -> None:
    fake, server = setup
    fake.script = Script(text="finished anyway, " * 5, hang_after=2)
    headers = {"X-Tether-Detach": "true"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        async with c.stream("POST", "/v1/chat/completions", json=BODY, headers=headers) as r:
            sid = r.headers["x-tether-session-id"]
            await first_chunk(r)
        # A reader that resumes the stream and leaves again does not stop it either.
        async with c.stream("GET", r.headers["x-tether-stream-url"]) as again:
            await first_chunk(again)
        await asyncio.sleep(GRACE + 1.5)  # past the grace: nothing may happen in it
        assert fake.disconnects == 0
        snap = (await c.get(f"/v1/sessions/{sid}")).json()
        assert snap["status"] == "running", snap
        fake.release()
        end = await run_end(c, sid)
        answer = (await c.get(f"/v1/sessions/{sid}")).json()["messages"][-1]
    assert end["reason"] == "complete"
    assert answer["parts"][-1]["text"] == ("finished anyway, " * 5).rstrip()
    assert fake.disconnects == 0


async def test_a_client_that_resumes_within_the_grace_keeps_its_run(setup) -> None:
    fake, server = setup
    fake.script = Script(text="worth the wait. " * 5, hang_after=2)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        async with c.stream("POST", "/v1/chat/completions", json=BODY) as r:
            resume = r.headers["x-tether-stream-url"]
            await first_chunk(r)
        async with c.stream("GET", resume) as again:
            await asyncio.sleep(GRACE + 1.5)  # its reader holds the run past the grace
            assert fake.disconnects == 0
            fake.release()
            data = [line[6:] async for line in again.aiter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(
        (json.loads(d)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for d in data[:-1]
    )
    assert text == ("worth the wait. " * 5).rstrip()
    assert fake.disconnects == 0


async def test_a_whole_completion_whose_client_gives_up_is_cancelled(setup) -> None:
    fake, server = setup
    fake.script = Script(text="never finished " * 5, hang_after=2)
    body = {**BODY, "stream": False}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/v1/chat/completions", json=body, timeout=1.0)
        await fake.wait_disconnect(timeout=GRACE + 5)
        sessions = (await c.get("/v1/sessions", params={"gateway": "true"})).json()["sessions"]
        end = await run_end(c, sessions[0]["id"])
    assert end["reason"] == "cancelled"


def ui_chat(chat_id: str) -> dict[str, Any]:
    """An AI SDK useChat request of a new chat on the upstream's model."""
    message = {"id": "u-1", "role": "user", "parts": [{"type": "text", "text": "An essay?"}]}
    return {
        "id": chat_id,
        "messages": [message],
        "trigger": "submit-message",
        "model": "openai/gpt-4o-mini",
    }


async def first_ui_text(r: httpx.Response) -> None:
    """Read up to the answer's first text (the upstream is streaming by then)."""
    async for line in r.aiter_lines():
        if line.startswith("data: ") and json.loads(line[6:])["type"] == "text-delta":
            return
    raise AssertionError("the UI message stream ended before any text")


async def test_an_ai_sdk_chat_that_asks_to_stop_on_disconnect_is_cancelled(setup) -> None:
    fake, server = setup
    fake.script = Script(text="never finished " * 5, hang_after=2)
    headers = {"X-Tether-Detach": "false"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        body = ui_chat("chat-stops")
        async with c.stream("POST", "/v1/aisdk/chat", json=body, headers=headers) as r:
            sid = r.headers["x-tether-session-id"]
            await first_ui_text(r)
        await fake.wait_disconnect(timeout=GRACE + 5)
        end = await run_end(c, sid)
    assert end["reason"] == "cancelled"


async def test_an_ai_sdk_chat_runs_on_when_its_page_closes(setup) -> None:
    """The AI SDK's default: a chat UI resumes its run on reload, so the run goes on."""
    fake, server = setup
    fake.script = Script(text="there when you return " * 3, hang_after=2)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        async with c.stream("POST", "/v1/aisdk/chat", json=ui_chat("chat-goes-on")) as r:
            sid = r.headers["x-tether-session-id"]
            await first_ui_text(r)
        await asyncio.sleep(GRACE + 1.5)
        assert fake.disconnects == 0
        fake.release()
        end = await run_end(c, sid)
    assert end["reason"] == "complete"
