"""What an operator's tools call: liveness, readiness and metrics.

- ``/healthz``: the process answers (restart it when this fails);
- ``/readyz``: the store answers in time and the server is not stopping
  (send traffic elsewhere while it is 503). It also shows each configured
  upstream's last known state, which never makes it fail: an upstream is
  shared by every replica, so taking replicas out of the load balancer for
  it would not route around it, only turn a partial outage (the other
  upstreams, sessions, streams) into a full one;
- ``/metrics``: Prometheus' text format. With keys configured it takes any
  valid key (a read token is refused: it reads one resource); a separate
  listener (``--metrics-port``, loopback by default) serves it without one,
  for a scraper that should hold no key.

Each readiness check, and each scrape, sets ``tether_ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import h11
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tether.api.auth import Auth, Unauthorized
from tether.api.errors import error_body
from tether.observability import metrics
from tether.sessions.service import META
from tether.store.base import Store
from tether.store.errors import StoreError

log = logging.getLogger(__name__)

#: Seconds the store has to answer a readiness check.
READY_TIMEOUT = 1.0
#: Bytes of a request head the metrics listener reads at most.
_MAX_HEAD = 16 * 1024


class Readiness:
    """Whether this replica can serve: its store answers, it is not stopping."""

    def __init__(
        self,
        store: Store,
        stopping: Callable[[], bool],
        upstreams: Iterable[str],
        agents: Callable[[], dict[str, dict[str, object]]] | None = None,
    ):
        self._store = store
        self._stopping = stopping
        #: The configured upstreams, shown in ``/readyz`` by their last known state.
        self.upstreams = sorted(upstreams)
        #: The ACP agents' supervisor states, shown in ``/readyz`` (never failing it:
        #: a failed agent fails its own runs, not the sessions of every other model).
        self.agents = agents

    async def check(self) -> str | None:
        """Why this replica is not ready, or None; ``tether_ready`` says the same."""
        reason = await self._reason()
        metrics.READY.set(0 if reason else 1)
        return reason

    async def _reason(self) -> str | None:
        if self._stopping():
            return "stopping"
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self._store.get_record(META, "ready")
        except (StoreError, TimeoutError):
            return "store unavailable"
        return None

    def upstream_states(self) -> dict[str, dict[str, object]]:
        """Each upstream's state from its last request (by name: never a URL or key)."""
        states: dict[str, dict[str, object]] = {}
        for name in self.upstreams:
            last = metrics.UPSTREAMS.get(name)
            states[name] = last.public() if last is not None else {"state": "unknown"}
        return states


def build_operations_router(readiness: Readiness, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["meta"])

    @router.get("/healthz")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Restart it when this fails."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "Not ready"}})
    async def ready() -> JSONResponse:
        """Readiness: the store answers in time and the server is not stopping.

        Send traffic elsewhere while this is 503 (Redis away, shutting down).
        ``upstreams`` (when some are configured) shows each one's last known
        state; an upstream's error does not make this fail.
        """
        reason = await readiness.check()
        body: dict[str, object] = (
            {"status": "unavailable", "reason": reason} if reason else {"status": "ready"}
        )
        if readiness.upstreams:
            body["upstreams"] = readiness.upstream_states()
        if readiness.agents is not None and (agents := readiness.agents()):
            body["agents"] = agents
        if reason:
            return JSONResponse(body, status_code=503, headers={"retry-after": "1"})
        return JSONResponse(body)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {metrics.CONTENT_TYPE: {}}}, 401: {}},
    )
    async def scrape(request: Request) -> Response:
        """Prometheus metrics; with keys configured, any valid key (not a read token)."""
        try:
            auth.caller(request.headers.get("authorization"))
        except Unauthorized as err:
            refused = error_body(401, "unauthorized", str(err))
            refused.headers["www-authenticate"] = "Bearer"
            return refused
        await readiness.check()
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return router


class MetricsListener:
    """``--metrics-port``: ``GET /metrics`` on a listener of its own, without a key.

    A few lines of HTTP/1.1 (h11 parses it) rather than a second uvicorn
    server, which would take over the process's signal handlers.
    """

    def __init__(self, readiness: Readiness, host: str, port: int) -> None:
        self._readiness = readiness
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        try:
            async with asyncio.timeout(10):
                request = await _read_request(conn, reader)
                if request is None:
                    return
                status, body, media = await self._answer(request)
                headers = [("content-type", media), ("content-length", str(len(body)))]
                headers.append(("connection", "close"))
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=body)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
        except (TimeoutError, ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, request: h11.Request) -> tuple[int, bytes, str]:
        path = request.target.split(b"?", 1)[0]
        if path != b"/metrics":
            return 404, b"not found: this listener serves /metrics\n", "text/plain"
        if request.method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", "text/plain"
        await self._readiness.check()
        body = metrics.exposition() if request.method == b"GET" else b""
        return 200, body, metrics.CONTENT_TYPE


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            data = await reader.read(4096)
            conn.receive_data(data)
            if not data:
                return None
        elif isinstance(event, h11.ConnectionClosed):
            return None
