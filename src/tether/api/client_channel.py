"""The client channel's routes: clients answer requests, backends make them over HTTP.

- ``POST /v1/sessions/{id}/client-responses`` ``{request_id, result | error}``:
  a client answers a ``client-request`` of the session's log, once (409 after
  that; 404 for a request the session never made; 400 for a bad body or an
  answer a typed method does not accept).
- ``POST /v1/sessions/{id}/interact``: a backend holding the session's key puts
  one JSON-RPC 2.0 request, or a batch, to the session's clients. Each is
  recorded as a ``client-request`` (so the same clients answer it as a run's),
  and the answers stream back as SSE, one JSON-RPC response per request in the
  order they are answered; the stream ends when all are. A caller that leaves
  withdraws nothing: its requests stay answerable, and their answers are in
  the session's log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tether.api.auth import Caller, Unauthorized, session_resource
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, IdempotentRoute
from tether.api.relay import EventStreamResponse, Follow
from tether.api.sessions import Who
from tether.runtime import client_requests as rpc
from tether.runtime.runner import InvalidInput, Runtime
from tether.sessions import events as ev
from tether.sessions.service import SessionNotFound, SessionService
from tether.streams.wire import format_offset

#: Requests in one /interact batch, at most.
MAX_BATCH = 100


class RpcRefused(Exception):
    """A call /interact refuses as a whole (HTTP 400, a JSON-RPC error with id null)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ClientChannelRoutes:
    """The two routes (:attr:`router`), each one a method."""

    def __init__(
        self,
        sessions: SessionService,
        runtime: Runtime,
        stop: Callable[[], asyncio.Future[None]],
        *,
        send_buffer: int | None = None,
    ) -> None:
        """``send_buffer``: the bytes of the session an /interact caller may leave
        unread before it is cut off (``--sse-send-buffer``)."""
        self.sessions = sessions
        self.runtime = runtime
        self.stop = stop
        self.send_buffer = send_buffer
        self.router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
        self.router.add_api_route(
            "/{session_id}/client-responses", self.client_response, methods=["POST"],
            status_code=202, route_class_override=IdempotentRoute,
            openapi_extra=IDEMPOTENCY_HEADER,
        )  # fmt: skip
        self.router.add_api_route(
            "/{session_id}/interact", self.interact, methods=["POST"],
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}},
            openapi_extra={"requestBody": {"content": {"application/json": {}}}},
        )  # fmt: skip

    async def _owned(self, session_id: str, who: Caller) -> None:
        if who.read_only:
            raise Unauthorized("a read token can only read")
        if not who.may_read(session_resource(session_id)):
            raise SessionNotFound(session_id)
        await self.sessions.record(session_id, who.owner)

    async def client_response(
        self, session_id: str, who: Who, body: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        """Answer a client request of the session: ``{request_id, result}`` or
        ``{request_id, error: {code, message, data?}}`` (JSON-RPC 2.0), once."""
        await self._owned(session_id, who)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInput("request_id is required")
        answers = [k for k in ("result", "error") if k in body]
        if len(answers) != 1 or set(body) - {"request_id", "result", "error"}:
            raise InvalidInput("give request_id and one of result or error, nothing else")
        await self.runtime.client_response(session_id, request_id, {answers[0]: body[answers[0]]})
        return {"ok": True}

    async def interact(self, session_id: str, request: Request, who: Who) -> Response:
        """Put JSON-RPC requests (one, or a batch) to the session's clients; their
        answers stream back as SSE, one JSON-RPC response per request, as they come."""
        await self._owned(session_id, who)
        try:
            calls = parse_calls(await request.body())
        except RpcRefused as err:
            error = {"code": err.code, "message": str(err)}
            return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, status_code=400)
        ids = {ev.new_id("req"): call["id"] for call in calls}
        batch = [
            ev.event(
                ev.CLIENT_REQUEST, request_id=rid, method=call["method"], params=call.get("params")
            )
            for rid, call in zip(ids, calls, strict=True)
        ]
        position = await self.sessions.append(session_id, batch)
        follow = Follow(self.sessions, session_id, position, Answers(ids), stop=self.stop(),
                        send_buffer=self.send_buffer)  # fmt: skip
        # A caller cut off finds its requests, then their answers, in the session's events.
        return EventStreamResponse(follow, {}, resume=format_offset(position - len(batch)))


class Answers:
    """/interact's view of the session: the JSON-RPC response to each of its requests.

    ``ids`` maps tether's request id to the caller's; finished once all are answered.
    """

    __slots__ = ("left",)

    def __init__(self, ids: dict[str, Any]) -> None:
        self.left = dict(ids)

    @property
    def finished(self) -> bool:
        return not self.left

    def frame(self, position: int, event: bytes) -> bytes:
        e = orjson.loads(event)
        if e.get("type") != ev.CLIENT_RESPONSE or e.get("request_id") not in self.left:
            return b""
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": self.left.pop(e["request_id"])}
        if e.get("error") is not None:
            reply["error"] = e["error"]
        else:
            reply["result"] = e.get("result")
        return b"data: " + orjson.dumps(reply) + b"\n\n"

    def last(self) -> bytes:
        return b""


def parse_calls(body: bytes) -> list[dict[str, Any]]:
    """The requests of an /interact body, checked; RpcRefused says what is wrong."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RpcRefused(rpc.PARSE_ERROR, f"the body is not JSON: {err}") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or len(calls) > MAX_BATCH:
        raise RpcRefused(rpc.INVALID_REQUEST, f"a batch holds 1 to {MAX_BATCH} requests")
    seen: set[Any] = set()
    for call in calls:
        _check_call(call)
        key = (type(call["id"]).__name__, call["id"])
        if key in seen:
            raise RpcRefused(rpc.INVALID_REQUEST, f"id {call['id']!r} is used twice")
        seen.add(key)
    return calls


def _check_call(call: Any) -> None:
    if not isinstance(call, dict) or call.get("jsonrpc") != "2.0":
        raise RpcRefused(rpc.INVALID_REQUEST, 'each request is an object with "jsonrpc": "2.0"')
    if not isinstance(call.get("method"), str) or not call["method"]:
        raise RpcRefused(rpc.INVALID_REQUEST, "each request needs a method")
    if "id" not in call:
        raise RpcRefused(
            rpc.INVALID_REQUEST,
            f"request {call['method']} has no id: a notification would never be answered",
        )
    rid = call["id"]
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise RpcRefused(rpc.INVALID_REQUEST, "a request's id is a string or an integer")
    params = call.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise RpcRefused(rpc.INVALID_PARAMS, "params is an object or an array")
    problem = rpc.params_problem(call["method"], params)
    if problem is not None:
        raise RpcRefused(rpc.INVALID_PARAMS, problem)
    if set(call) - {"jsonrpc", "method", "params", "id"}:
        raise RpcRefused(rpc.INVALID_REQUEST, "a request has only jsonrpc, method, params and id")
