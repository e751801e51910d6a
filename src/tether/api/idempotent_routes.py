"""The session API's mutating routes, made idempotent by an ``Idempotency-Key`` header.

A route declared with :class:`IdempotentRoute` answers a request that carries
the header through :meth:`Idempotency.once <tether.api.idempotency.Idempotency.once>`:
the handler runs once per key and caller, and its answer (status and JSON
body, successes only) is what a retry gets back, marked ``Idempotent-Replayed:
true``. The request's fingerprint is its method, route, path parameters and
body bytes (a retry sends the same bytes). Requests without the header go
straight to the handler.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response

from tether.api.auth import Auth
from tether.api.bodies import CheckedJSONRoute
from tether.api.idempotency import HEADER, MAX_KEY, Idempotency, check_key, fingerprint

REPLAYED = "idempotent-replayed"


#: For ``add_api_route(openapi_extra=...)``: the header in the OpenAPI document
#: (declared there rather than as a parameter, which every request would pay for).
IDEMPOTENCY_HEADER: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
            "description": "Any unique string (a UUID): a retry with the same key within "
            "the retention window gets the first answer and changes nothing.",
        }
    ]
}


class IdempotentRoute(CheckedJSONRoute):
    """A JSON route whose answer is kept under the request's ``Idempotency-Key``.

    Needs ``app.state.auth`` (whose caller the key belongs to) and
    ``app.state.idempotency``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route = self.path

        async def idempotent(request: Request) -> Response:
            raw = request.headers.get(HEADER)
            if raw is None:
                return await handler(request)
            auth: Auth = request.app.state.auth
            who = auth.caller(
                request.headers.get("authorization"), request.query_params.get("token")
            )
            if who.read_only:
                return await handler(request)  # refused there: a read token only reads
            key = check_key(raw)
            body = hashlib.sha256(await request.body()).hexdigest()
            request_print = fingerprint(request.method, route, request.path_params, body)
            fresh: list[Response] = []

            async def answer() -> dict[str, Any]:
                response = await handler(request)
                fresh.append(response)
                if not 200 <= response.status_code < 300:
                    raise _NotKept()
                return {"status": response.status_code, "body": orjson.loads(bytes(response.body))}

            keys: Idempotency = request.app.state.idempotency
            try:
                outcome = await keys.once(who.owner, key, request_print, answer)
            except _NotKept:
                return fresh[0]
            if not outcome.replayed:
                return fresh[0]
            kept = outcome.value
            return Response(
                orjson.dumps(kept["body"]), kept["status"], {REPLAYED: "true"}, "application/json"
            )

        return idempotent


class _NotKept(Exception):
    """A handler's answer that is not a success: returned as it is, and not kept."""
