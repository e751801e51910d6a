"""The ASGI application: stream protocol routes plus the framework-served rest."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tether.store.base import Store
from tether.streams.app import Receive, Scope, Send, StreamsApp, StreamsConfig

log = logging.getLogger(__name__)


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


class TetherApp:
    """Dispatches ``/v1/stream/...`` straight to the protocol handler.

    Everything else goes to a Starlette app. The store is opened and closed by
    the ASGI lifespan, so whoever runs the app owns the store's background work.
    """

    def __init__(self, store: Store, streams: StreamsConfig | None = None) -> None:
        self.store = store
        self.streams = StreamsApp(store, streams)
        self._prefix = self.streams.config.prefix
        self._web = Starlette(routes=[Route("/healthz", _health)])

    def shutdown(self) -> None:
        self.streams.shutdown()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith(self._prefix):
            await self.streams(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._web(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.store.open()
                except Exception as err:
                    log.exception("could not open the store")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
