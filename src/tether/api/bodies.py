"""JSON bodies of the FastAPI routes, checked within bounds before FastAPI parses them.

FastAPI parses a body with the standard library, which accepts what tether's
events cannot carry (integers past 64 bits, lone surrogates, nesting deep
enough to exhaust the stack) and has no bound on the work a body causes. So
each route's body is first checked with ``streams.json_body`` (the limits are
``app.state.json_limits``); a refusal is a 4xx and the route never runs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from tether.streams import json_body
from tether.streams.json_body import JsonLimits

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class CheckedJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.method in _WITH_BODY:
                body = await request.body()  # kept by the request: FastAPI reads it again
                if body:
                    limits: JsonLimits = request.app.state.json_limits
                    json_body.check_value(json_body.parse(body, limits), limits)
            return await handler(request)

        return route
