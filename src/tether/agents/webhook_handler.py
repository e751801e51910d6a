"""Webhook mode: an app's agents served from an HTTPS endpoint a function platform hosts.

A tether server with ``TETHER_WEBHOOK_AGENTS=name=https://host/path`` POSTs
each wake of the agent's work stream to that URL, signed (docs/subscriptions.md).
:class:`WebhookHandler` is the endpoint, an ASGI app built from the same
``@app.agent`` functions that ``tether serve`` and ``tether worker`` run:

1. it verifies ``Webhook-Signature`` before anything else, with the server's
   published key set (fetched once, again when a delivery names a ``kid`` it
   does not know) and a five-minute replay window;
2. it drives the wake's sessions with the runtime's own code over
   :class:`~tether.runtime.remote_store.RemoteStore`, calling the worker API
   with the wake's callback token (which reaches those sessions only); their
   agents' models read the sessions' stored attachments with that token too,
   and their tools are the app's and those of the ``[[mcp_servers]]`` of
   ``$TETHER_CONFIG``, connected while the handler runs (its lifespan, or
   :meth:`WebhookHandler.start` and :meth:`WebhookHandler.aclose`);
3. it ends the wake: by answering ``{"done": true}`` when the sessions are
   done within ``sync_budget`` seconds of the request, else by answering
   ``{"done": false}`` at that point, working on, extending the wake while it
   works (a heartbeat ack), and acking ``done`` through the worker API at the
   end. The server's delivery timeout (10 s) bounds the request, and an
   agent's run may be longer: a run that outlives the request must not turn
   into a failed delivery, whose retry would fence its own token.

Use it as an ASGI app (``uvicorn --factory tether.agents.webhook_handler:from_env``
with ``TETHER_WEBHOOK_APP=module:app`` and ``TETHER_URL``), or call
:meth:`WebhookHandler.handle` from any framework with the raw body and header.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from functools import partial
from typing import Any

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tether.agents.app import App, load_app
from tether.agents.attachments import reading_attachments
from tether.agents.context import AgentKit, CustomAgent
from tether.agents.llm import RetryPolicy
from tether.agents.mcp import MCPToolsets
from tether.agents.mcp_config import MCPServerConfig, load_mcp_servers
from tether.agents.tools import ToolRegistry
from tether.providers.redaction import Redactor, redact_records
from tether.providers.registry import ProviderRegistry
from tether.runtime.driver import Agent
from tether.runtime.remote_store import RemoteSessions, RemoteStore
from tether.runtime.runner import Runtime
from tether.sessions.service import SessionRecord

log = logging.getLogger("tether.webhook")

#: Seconds a signature's timestamp may be from this clock (PROTOCOL.md 7.1).
REPLAY_WINDOW = 300.0
#: Seconds the handler works within the request before answering ``{"done": false}``
#: (under the server's 10-second delivery timeout, with room for the network).
SYNC_BUDGET = 5.0
#: Least seconds between two fetches of the key set for an unknown ``kid``.
JWKS_REFETCH = 10.0
#: Largest delivery body read (a wake's payload is a few hundred bytes).
MAX_BODY = 256 * 1024
_SIGNATURE = re.compile(r"t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeySet:
    """The server's webhook public keys by ``kid``, fetched from its JWKS URL as needed."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self._client = client
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        """The key named ``kid``; an unknown one refetches the set (rotation), at most
        every :data:`JWKS_REFETCH` seconds so forged kids cannot make us hammer it."""
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at > JWKS_REFETCH:
                self._fetched_at = time.monotonic()
                await self._fetch()
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        try:
            res = await self._client.get(self.url)
            res.raise_for_status()
            keys = orjson.loads(res.content)["keys"]
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError) as err:
            log.warning("could not fetch the webhook key set: %s", type(err).__name__)
            return
        for jwk in keys:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
                with contextlib.suppress(ValueError):
                    self._keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"]))


class WebhookHandler:
    """An ASGI app that serves an :class:`App`'s agents for the wakes a tether server
    POSTs to it (see the module's docstring)."""

    def __init__(
        self,
        app: App,
        server: str,
        *,
        jwks_url: str | None = None,
        registry: ProviderRegistry | None = None,
        mcp_servers: Sequence[MCPServerConfig] = (),
        sync_budget: float = SYNC_BUDGET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``server``: the tether server's base URL (its worker API); ``jwks_url``: its
        key set (default: ``{server}/v1/stream/__ds/jwks.json``); ``mcp_servers``: those
        whose tools the agents get (ValueError if an agent names a tool nobody has)."""
        app.check_tools({s.name for s in mcp_servers})
        self.app = app
        self.server = server.rstrip("/")
        self._client = httpx.AsyncClient(timeout=10.0)
        self.keys = KeySet(jwks_url or f"{self.server}/v1/stream/__ds/jwks.json", self._client)
        self.registry = registry or ProviderRegistry.from_env()
        self.tools = ToolRegistry(app.tools)
        #: The MCP servers' connections, which add their tools to ``tools``.
        self.mcp = MCPToolsets(mcp_servers, self.tools)
        self.retry = RetryPolicy()
        self.sync_budget = sync_budget
        self._clock = clock
        #: Wakes being served here, by wake id (a repeated delivery starts nothing).
        self._wakes: dict[str, asyncio.Task[None]] = {}

    # -- the request -------------------------------------------------------------

    async def verify(self, body: bytes, header: str | None) -> str | None:
        """Why the delivery is refused, or None when ``header`` signs ``body`` recently
        with one of the server's keys."""
        match = _SIGNATURE.fullmatch(header or "")
        if match is None:
            return "no valid Webhook-Signature header"
        stamp, kid, signature = match.groups()
        if abs(self._clock() - int(stamp)) > REPLAY_WINDOW:
            return "the signature's timestamp is outside the replay window"
        key = await self.keys.key(kid)
        if key is None:
            return "the signature's key is not in the server's key set"
        try:
            key.verify(_unb64url(signature), stamp.encode() + b"." + body)
        except (InvalidSignature, ValueError):
            return "the signature does not match"
        return None

    async def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        """One delivery (raw body, ``Webhook-Signature``): the status and JSON to answer."""
        refused = await self.verify(body, signature)
        if refused is not None:
            return 401, {"error": refused}
        try:
            wake = orjson.loads(body)
            wake_id, token = str(wake["wake_id"]), str(wake["callback_token"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return 400, {"error": "not a wake"}
        if wake_id in self._wakes:
            return 200, {"done": False}  # a repeat: the first delivery's work goes on
        answer: dict[str, str] = {}  # "sync" or "async": who says done, decided once
        finished = asyncio.Event()
        task = asyncio.create_task(self._serve(token, answer, finished))
        self._wakes[wake_id] = task
        task.add_done_callback(lambda _: self._wakes.pop(wake_id, None))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), self.sync_budget)
        if answer.setdefault("by", "async") == "sync":
            return 200, {"done": True}
        if answer["by"] == "failed":
            return 502, {"error": "the wake could not be served"}
        return 200, {"done": False}

    async def _serve(self, token: str, answer: dict[str, str], finished: asyncio.Event) -> None:
        """Drive the wake's sessions until none is left here, then say done (in the
        answer if it is not sent yet, else by an ack)."""
        store = RemoteStore(self.server, token)
        await store.open()
        try:
            try:
                await self._drive(store)
            except Exception as err:
                log.warning("a wake could not be served: %s", err)
                answer.setdefault("by", "failed")
                return
            if answer.setdefault("by", "sync") == "async":
                await store.call("ack", {"done": True})
            log.info("a wake is done (%s)", "acked" if answer["by"] == "async" else "in the answer")
        except Exception as err:
            log.warning("a wake's done could not be sent: %s", err)
        finally:
            finished.set()
            await store.aclose()

    async def _drive(self, store: RemoteStore) -> None:
        wake = await store.call("wake", {})
        owner = f"{wake['identity']}/{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        ttl = float(wake["lease_ttl"])
        # The wake's models read its sessions' attachments with its token.
        models = reading_attachments(self.registry.resolve, store.read_attachment)
        kit = AgentKit(models, self.tools, self.retry)
        runtime = Runtime(
            RemoteSessions(store), partial(self._resolve, kit), lease_ttl=ttl, worker=owner,
            reap=False,
        )  # fmt: skip
        await runtime.start()
        beat = asyncio.create_task(self._heartbeat(store, ttl / 3))
        try:
            for session_id in wake["sessions"]:
                await runtime.take_over(session_id)
            await runtime.until_idle()  # woken when the last session is let go
        finally:
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat
            await runtime.aclose()

    @staticmethod
    async def _heartbeat(store: RemoteStore, every: float) -> None:
        """Extend the wake while its sessions run (it would lapse and wake again)."""
        while True:
            await asyncio.sleep(every)
            try:
                await store.call("ack", {"done": False})
            except Exception as err:
                log.warning("could not extend the wake: %s", err)

    def _resolve(self, kit: AgentKit, record: SessionRecord) -> Agent:
        fn = self.app.agents.get(record.agent or "")
        if fn is None:
            raise LookupError(f"agent {record.agent!r} is not served by this handler")
        tools = self.app.agent_tools.get(record.agent or "", ())
        return CustomAgent(fn, kit, tools, replay=record.agent not in self.app.no_replay)

    # -- ASGI --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _respond(send, 405, {"error": "POST a wake here"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _respond(send, 413, {"error": "the body is too large"})
                return
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        signature = headers.get(b"webhook-signature", b"").decode("latin-1") or None
        status, answer = await self.handle(bytes(body), signature)
        await _respond(send, status, answer)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as err:
                    await self.mcp.aclose()
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        """Connect the MCP servers (an ASGI server's lifespan calls it; call it before
        the first :meth:`handle` otherwise)."""
        await self.mcp.start()

    async def aclose(self) -> None:
        """Stop the wakes served here (their runs are left to be continued), then the
        MCP servers, and close."""
        tasks = list(self._wakes.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.mcp.aclose()
        await self._client.aclose()


async def _respond(send: Send, status: int, answer: dict[str, Any]) -> None:
    body = orjson.dumps(answer)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def from_env() -> WebhookHandler:
    """The handler of ``$TETHER_WEBHOOK_APP`` (``module:app``) for the server at
    ``$TETHER_URL`` (for ``uvicorn --factory``), with the MCP servers of
    ``$TETHER_CONFIG``; ``$TETHER_JWKS_URL`` and
    ``$TETHER_WEBHOOK_SYNC_BUDGET`` (seconds) if the defaults do not fit.

    It redacts this process's log, as ``tether serve`` does its own: uvicorn runs
    no CLI of tether's that would."""
    env = os.environ
    spec = env.get("TETHER_WEBHOOK_APP", "")
    if not spec:
        raise RuntimeError("set TETHER_WEBHOOK_APP=module:app")
    registry = ProviderRegistry.from_env()
    mcp_servers = load_mcp_servers(env)
    # Before the app is imported: no record of this process shows a provider key or
    # an MCP server's secret, whichever logger or handler (uvicorn's, the app's) has
    # it; nor a callback token, which travels as a credential field (a Bearer header,
    # the wake's "callback_token").
    secrets = [s.get() for s in registry.secrets()]
    secrets += [secret for server in mcp_servers for secret in server.secrets()]
    redact_records(Redactor(secrets))
    return WebhookHandler(
        load_app(spec),
        env.get("TETHER_URL", "http://127.0.0.1:4437"),
        jwks_url=env.get("TETHER_JWKS_URL"),
        registry=registry,
        mcp_servers=mcp_servers,
        sync_budget=float(env.get("TETHER_WEBHOOK_SYNC_BUDGET") or SYNC_BUDGET),
    )
