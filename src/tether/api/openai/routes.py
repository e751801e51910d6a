"""The gateway's routes: Chat Completions, its stream replays, and the model list.

Each completion is a run in a session of its own, owned by the caller (see
:class:`~tether.api.gateway.Gateway`); its answer is read from the session's
events through the relay, translated by :class:`~tether.api.openai.chunks.ChunkMapper`.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from tether.agents.gateway import GatewaySpec
from tether.api.gateway import Gateway, Started
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, REPLAYED
from tether.api.openai.chunks import ChunkMapper
from tether.api.openai.errors import OpenAIError, auth_header, store_error
from tether.api.openai.request import parse_completion
from tether.api.relay import EventStreamResponse, Follow
from tether.sessions.service import QuotaExceeded
from tether.store.errors import BackendUnavailable, InsufficientStorage

log = logging.getLogger(__name__)

#: The path TetherApp serves through :meth:`OpenAIRoutes.completions` directly.
COMPLETIONS_PATH = "/v1/chat/completions"


class OpenAIRoutes:
    """The gateway's FastAPI routes (:attr:`router`), and its completions endpoint as plain ASGI.

    TetherApp sends ``POST /v1/chat/completions`` to :meth:`completions` without
    going through FastAPI: every completion's time to first token pays for
    the work done before its upstream request is written, and FastAPI's
    routing, middleware and dependency handling were a third of it. The route
    stays in ``router`` too, for the OpenAPI document.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.started = int(time.time())
        self.router = APIRouter(tags=["openai"])
        add = self.router.add_api_route
        add(
            COMPLETIONS_PATH, self.chat_completions, methods=["POST"], response_model=None,
            openapi_extra=IDEMPOTENCY_HEADER,
        )  # fmt: skip
        add("/v1/models", self.models, methods=["GET"], response_model=None)
        add("/v1/models/{model_id:path}", self.model, methods=["GET"], response_model=None)
        add(
            "/v1/chat/completions/{session_id}/stream",
            self.completion_stream,
            methods=["GET"],
            response_model=None,
        )

    # -- the routes ---------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        """OpenAI's Chat Completions, streamed or not; see the package's docstring.

        With an ``Idempotency-Key``, a retry starts no second run: it gets the
        first request's run, answered from its start. Closing a streamed
        answer stops its run after ``--gateway-detach-grace`` seconds unless
        the request says ``X-Tether-Detach: true``.
        """
        gateway = self.gateway
        try:
            who = gateway.caller(request)
            body, raw = await gateway.body(request)
            req = parse_completion(body)
            target = gateway.target(req.spec.model)
            started = await gateway.start(request, who, req, target, path=COMPLETIONS_PATH, raw=raw)
        except OpenAIError as err:
            return err.response(auth_header(err))
        except QuotaExceeded as err:
            return OpenAIError(
                429, str(err), type="insufficient_quota", code="insufficient_quota"
            ).response()
        response = await self._answer(request, started, req.spec)
        if started.replayed:
            response.headers[REPLAYED] = "true"
        return response

    async def _answer(self, request: Request, started: Started, spec: GatewaySpec) -> Response:
        """The answer of a completion's run, read from its session from its start."""
        headers = started.headers(COMPLETIONS_PATH)
        mapper = ChunkMapper(spec, frames=spec.stream)
        follow = self.gateway.follow(
            started, mapper, detach=self.gateway.detach(request), stream=spec.stream
        )
        if not spec.stream:
            return await _whole(self.gateway, follow, mapper, headers, request)
        # Hold the headers until the upstream has accepted the request (its
        # answer's head came back 2xx) or the model has said something, so that
        # a request the upstream refuses outright gets an HTTP error, as from
        # OpenAI. Errors after that come in the stream, as they do from OpenAI.
        if await self.gateway.accepted(started):
            return EventStreamResponse(follow, headers)
        return await _streamed(follow, mapper, headers)

    async def models(self, request: Request) -> Response:
        """The configured upstreams' models, ``demo`` and this server's agents (``agent:<name>``).

        Authenticated like the rest of OpenAI's API: with keys configured, the
        list is for key holders only.
        """
        try:
            self.gateway.caller(request)
        except OpenAIError as err:
            return err.response(auth_header(err))
        return JSONResponse(
            {"object": "list", "data": [self._model(n) for n in self.gateway.models()]}
        )

    async def model(self, model_id: str, request: Request) -> Response:
        """One model of :meth:`models` (404 in OpenAI's shape for any other name)."""
        try:
            self.gateway.caller(request)
            if model_id not in self.gateway.models():
                raise OpenAIError(
                    404, f"The model `{model_id}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found",
                )  # fmt: skip
        except OpenAIError as err:
            return err.response(auth_header(err))
        return JSONResponse(self._model(model_id))

    def _model(self, name: str) -> dict[str, object]:
        return {"id": name, "object": "model", "created": self.started, "owned_by": "tether"}

    async def completion_stream(self, session_id: str, request: Request) -> Response:
        """A completion's chunks again, from ``?offset=`` or ``Last-Event-ID`` on."""
        gateway = self.gateway
        try:
            who = gateway.caller(request, reading=session_id)
            record = await gateway.record(who, session_id, "chat")
            if record is None:
                raise OpenAIError(
                    404, f"No chat completion {session_id}.", param="session_id",
                    code="not_found",
                )  # fmt: skip
            after = await gateway.resume_after(request, session_id, "completion")
        except OpenAIError as err:
            return err.response(auth_header(err))
        mapper = ChunkMapper(GatewaySpec.from_metadata(record.metadata["gateway"]))
        follow = await gateway.reread(session_id, mapper, after=after)
        return EventStreamResponse(follow, {"x-tether-session-id": session_id})

    async def completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/chat/completions`` as plain ASGI, its failures in OpenAI's shape."""
        try:
            response = await self.chat_completions(Request(scope, receive))
        except ClientDisconnect:
            return  # the client went, or its body was too slow (408): no one to answer
        except (BackendUnavailable, InsufficientStorage) as err:
            # The store cannot take writes for now (Redis is away, the disk is
            # full); nothing was acknowledged, so a retry is safe.
            response = store_error(err).response({"retry-after": str(err.retry_after)})
        except Exception:
            log.exception("chat completion failed")
            response = OpenAIError(
                500, "The server had an error while processing your request.",
                type="server_error",
            ).response()  # fmt: skip
        await response(scope, receive, send)


async def _whole(
    gateway: Gateway,
    follow: Follow,
    mapper: ChunkMapper,
    headers: dict[str, str],
    request: Request,
) -> Response:
    """A completion answered in one ``chat.completion`` once its run has ended."""
    await gateway.whole(follow, request)
    if mapper.error is not None:
        return mapper.error.response(headers)
    if not mapper.ok:
        return OpenAIError(
            503, "The server is shutting down; read the stream URL later.", type="server_error"
        ).response(headers)
    return JSONResponse(mapper.completion(), headers=headers)


async def _streamed(follow: Follow, mapper: ChunkMapper, headers: dict[str, str]) -> Response:
    """The event stream, once the model has said something (or an HTTP error if it failed first)."""
    head: list[bytes] = []
    async for frames in follow.frames:
        if frames is None:
            break
        head += frames
        if mapper.error is not None and not (mapper.text or mapper.tool_calls):
            await follow.aclose()
            return mapper.error.response(headers)
        if len(head) > 1 or mapper.ended is not None:
            break
    return EventStreamResponse(follow, headers, head=b"".join(head))
