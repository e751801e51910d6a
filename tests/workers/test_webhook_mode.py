"""Webhook mode over real processes: ``tether serve`` POSTs an agent's wakes to a handler.

The handler is tether's own (tether.agents.webhook_handler) served by a real
uvicorn child on loopback HTTP (the server runs with --webhook-allow-loopback);
where a test needs the callback token itself, an in-process receiver takes the
deliveries and checks each signature against the published JWK Set.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from helpers.server import TetherServer, find_free_port, tether_command
from helpers.session_events import Events
from subscriptions.harness import Receiver, eventually, start_receiver
from subscriptions.receiver import verify
from tether.store.factory import open_store
from tether.subscriptions.signing import b64url, read_keys
from workers.test_workers import answer_text, new_session, send, stream_events
from workers.worker_cluster import APPS, ChildProcess


class Handler(ChildProcess):
    """``uvicorn --factory tether.agents.webhook_handler:from_env`` serving worker_app."""

    ready_line = "Application startup complete"
    name = "the webhook handler"

    def __init__(self, tmp: Path, port: int, server: str, env: dict[str, str]) -> None:
        self.port = port
        command = [
            sys.executable, "-m", "uvicorn", "--factory",
            "tether.agents.webhook_handler:from_env", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "info",
        ]  # fmt: skip
        env = {
            **env, "TETHER_WEBHOOK_APP": "worker_app:app", "TETHER_URL": server,
            "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        super().__init__(command, env, tmp / "handler.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Handler:
        self.spawn().wait_ready()
        return self


def _env(words: int = 3, delay: float = 0.0, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ, "PYTHONPATH": path, "TETHER_TEST_WORDS": str(words),
        "TETHER_TEST_DELAY": str(delay), **extra,
    }  # fmt: skip


@asynccontextmanager
async def webhook_server(
    tmp: Path, hooks: dict[str, str], env: dict[str, str], *args: str
) -> AsyncIterator[TetherServer]:
    """A server whose agents ``hooks`` names are served by webhooks (loopback allowed)."""
    server_env = {
        **env, "TETHER_WEBHOOK_AGENTS": ",".join(f"{a}={u}" for a, u in hooks.items()),
    }  # fmt: skip
    server = TetherServer(
        tmp / "data", log_path=tmp / "server.log", env=server_env,
        extra_args=["--webhook-allow-loopback", *args],
    )  # fmt: skip
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@asynccontextmanager
async def hooked(
    tmp: Path, agent: str, app: str, env: dict[str, str], *args: str, **handler_env: str
) -> AsyncIterator[tuple[TetherServer, Handler]]:
    """A server whose ``agent`` is served by tether's webhook handler of ``app`` in uvicorn
    (with ``handler_env`` in its environment only)."""
    handler = Handler(tmp, find_free_port(), "", env)
    handler.env.update(handler_env, TETHER_WEBHOOK_APP=app)
    async with webhook_server(tmp, {agent: handler.url}, env, *args) as server:
        handler.env["TETHER_URL"] = server.base_url
        await asyncio.to_thread(handler.start)
        try:
            yield server, handler
        finally:
            await asyncio.to_thread(handler.stop)
            assert "Traceback" not in handler.output(), handler.output()


@asynccontextmanager
async def handled(
    tmp: Path, env: dict[str, str], *args: str
) -> AsyncIterator[tuple[TetherServer, Handler]]:
    """A server whose agent ``words`` is served by tether's webhook handler in uvicorn."""
    async with hooked(tmp, "words", "worker_app:app", env, *args) as pair:
        yield pair


async def test_a_webhook_delivered_run_answers_in_the_session(tmp_path: Path) -> None:
    async with (
        handled(tmp_path, _env(words=3)) as (server, _),
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        for _ in range(2):  # the second run is a new wake, after the first one's done
            session_id = await new_session(c, {"agent": "words"})
            events = Events(c, session_id)
            run_id = await send(c, session_id)
            end = await events.run_end(run_id)
            await events.aclose()
            assert end["reason"] == "complete", server.output()
            log = await stream_events(c, session_id)
            assert answer_text(log, run_id) == "w0 w1 w2 "
            start = next(e for e in log if e["type"] == "run-start")
            assert start["worker"].startswith("whk_")  # driven with the wake's token
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            assert snap["status"] == "idle"


async def test_a_run_longer_than_the_request_is_heartbeated_and_acked(tmp_path: Path) -> None:
    # The handler answers {"done": false} after 0.2 s; the run takes 30 x 0.1 s, longer
    # than the wake's 2-second lease, which the handler's heartbeats keep alive.
    env = _env(words=30, delay=0.1, TETHER_WEBHOOK_SYNC_BUDGET="0.2")
    async with (
        handled(tmp_path, env, "--lease-ttl", "2") as (server, _),
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        session_id = await new_session(c, {"agent": "words"})
        events = Events(c, session_id)
        first = await send(c, session_id)
        await events.until(lambda e: e["type"] == "part-delta" and e["delta"] == "w2 ")
        snap = (await c.get(f"/v1/sessions/{session_id}")).json()
        assert snap["status"] == "running"  # not "waiting": no worker, but its handler
        assert (await events.run_end(first))["reason"] == "complete", server.output()
        second = await send(c, session_id)  # a wake after the first one was acked done
        assert (await events.run_end(second))["reason"] == "complete", server.output()
        await events.aclose()
        log = await stream_events(c, session_id)
        types = [e["type"] for e in log]
        assert types.count("run-start") == 2 and "run-resume" not in types  # no wake lapsed
        assert answer_text(log, second) == "".join(f"w{i} " for i in range(30))


async def test_the_handler_refuses_bad_signatures_and_old_timestamps(tmp_path: Path) -> None:
    async with (
        handled(tmp_path, _env()) as (server, handler),
        httpx.AsyncClient(timeout=30) as c,
    ):
        hook = handler.url
        jwks = (await c.get(server.stream_url("__ds/jwks.json"))).json()
        kid = jwks["keys"][0]["kid"]
        body = orjson.dumps({"wake_id": "w_test", "generation": 1, "callback_token": "x.y"})
        bad = base64.urlsafe_b64encode(os.urandom(64)).decode().rstrip("=")
        now = int(time.time())
        for header in (None, "t=1,kid=x", f"t={now},kid={kid},ed25519={bad}"):
            headers = {} if header is None else {"webhook-signature": header}
            r = await c.post(hook, content=body, headers=headers)
            assert r.status_code == 401, r.text
        # Signed with the server's own key: old is refused, the same body now verifies.
        await asyncio.to_thread(server.stop)
        store = open_store("sqlite", server.data_dir)
        await store.open()
        try:
            [key] = [k for k in await read_keys(store) if k.kid == kid]
        finally:
            await store.aclose()
        assert key.private is not None
        secret = Ed25519PrivateKey.from_private_bytes(key.private)

        def signed(t: int, content: bytes) -> str:
            signature = b64url(secret.sign(f"{t}.".encode() + content))
            return f"t={t},kid={kid},ed25519={signature}"

        old = signed(int(time.time()) - 301, body)
        r = await c.post(hook, content=body, headers={"webhook-signature": old})
        assert r.status_code == 401 and "replay window" in r.text, r.text
        tampered = signed(int(time.time()), body + b" ")
        r = await c.post(hook, content=body, headers={"webhook-signature": tampered})
        assert r.status_code == 401 and "does not match" in r.text, r.text
        fresh = signed(int(time.time()), body)
        r = await c.post(hook, content=body, headers={"webhook-signature": fresh})
        assert r.status_code == 502, r.text  # verified; the server (stopped) is unreachable


async def _call(c: httpx.AsyncClient, token: str, op: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    return await c.post(f"/v1/worker/{op}", json=body, headers=headers)


async def _wake(receiver: Receiver, jwks: dict[str, Any]) -> dict[str, Any]:
    delivery = await receiver.next()
    assert delivery.signature is not None and verify(delivery.raw, delivery.signature, jwks)
    return delivery.body


async def test_a_callback_token_reaches_its_wakes_sessions_only_and_is_fenced_after(
    tmp_path: Path,
) -> None:
    state, runner = await start_receiver()  # answers 200 {}: the wake stays open
    try:
        async with (
            webhook_server(tmp_path, {"tools": state.url}, _env(), "--lease-ttl", "10") as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
        ):
            jwks = (await c.get("/v1/stream/__ds/jwks.json")).json()
            mine = await new_session(c, {"agent": "tools"})
            other = await new_session(c, {"agent": "tools"})
            await send(c, mine)
            wake = await _wake(state, jwks)
            token = wake["callback_token"]
            r = await _call(c, token, "wake", {})
            assert r.status_code == 200, r.text
            scope = r.json()
            assert scope["sessions"] == [mine] and scope["generation"] == wake["generation"]
            owner = scope["identity"] + "/test"

            def append(session_id: str) -> dict[str, Any]:
                event = orjson.dumps({"type": "status", "status": "idle"})
                return {
                    "path": f"sessions/{session_id}", "content_type": "application/json",
                    "messages": [base64.b64encode(event).decode()],
                    "lease": [f"session:{session_id}", owner],
                }  # fmt: skip

            # Its own session: the lease, then reading and appending as the holder.
            body = {"name": f"session:{mine}", "owner": owner, "ttl": 10}
            assert (await _call(c, token, "lease_acquire", body)).json() == {"acquired": True}
            r = await _call(c, token, "read", {"path": f"sessions/{mine}", "offset": 0})
            assert r.status_code == 200, r.text
            assert (await _call(c, token, "append", append(mine))).status_code == 200
            # Another session: no lease, no append (403), nothing to read (404).
            body = {"name": f"session:{other}", "owner": owner, "ttl": 10}
            assert (await _call(c, token, "lease_acquire", body)).status_code == 404
            assert (await _call(c, token, "append", append(other))).status_code == 403
            # A batch is checked append by append: its own lands, the other's is refused.
            r = await _call(c, token, "append_batch", {"appends": [append(mine), append(other)]})
            assert [res.get("error", {}).get("status") for res in r.json()["results"]] == [
                None,
                403,
            ], r.text
            for op in ("read", "head"):
                r = await _call(c, token, op, {"path": f"sessions/{other}", "offset": 0})
                assert r.status_code == 404, r.text
            r = await _call(c, token, "record_get", {"namespace": "sessions", "key": other})
            assert r.status_code == 404, r.text
            # Nor the agent's work stream, nor a worker's operations.
            r = await _call(c, token, "read", {"path": "~keys/~work/tools", "offset": 0})
            assert r.status_code == 404, r.text
            r = await _call(c, token, "claim", {"agent": "tools", "owner": owner})
            assert r.status_code == 403, r.text
            # A token the server never made is no credential.
            assert (await _call(c, "nonsense", "wake", {})).status_code == 401
            # Done: the next wake (the other session's run) has a new generation, and
            # the old token is fenced on every call.
            body = {"name": f"session:{mine}", "owner": owner}
            assert (await _call(c, token, "lease_release", body)).status_code == 200
            await send(c, other)
            assert (await _call(c, token, "ack", {"done": True})).status_code == 200
            wake2 = await _wake(state, jwks)
            assert wake2["generation"] > wake["generation"]
            for op, body in (
                ("wake", {}), ("ack", {"done": True}), ("append", append(mine)),
                ("read", {"path": f"sessions/{mine}", "offset": 0}),
            ):  # fmt: skip
                r = await _call(c, token, op, body)
                assert r.status_code == 409 and r.json()["error"]["code"] == "fenced", r.text
            r = await _call(c, wake2["callback_token"], "wake", {})
            assert r.status_code == 200 and other in r.json()["sessions"], r.text
            assert token not in server.output()
    finally:
        await runner.cleanup()


async def test_a_run_whose_handler_fails_says_waiting(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{find_free_port()}/hook"  # nothing listens there
    async with (
        webhook_server(tmp_path, {"words": nobody}, _env()) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as c,
    ):
        session_id = await new_session(c, {"agent": "words"})
        await send(c, session_id)

        async def waiting() -> bool:
            snap = (await c.get(f"/v1/sessions/{session_id}")).json()
            return bool(snap["status"] == "waiting")

        await eventually(waiting, "the session says its run waits")


def test_a_webhook_url_the_policy_refuses_stops_the_server(tmp_path: Path) -> None:
    env = {**_env(), "TETHER_WEBHOOK_AGENTS": "words=http://127.0.0.1:9/hook"}
    done = subprocess.run(
        [*tether_command(), "serve", "--port", str(find_free_port()), "--data-dir",
         str(tmp_path / "data")],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert b"TETHER_WEBHOOK_AGENTS: agent 'words'" in done.stderr, done.stderr
