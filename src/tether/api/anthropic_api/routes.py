"""The Messages front's routes: ``POST /v1/messages``, its stream replays, count_tokens.

Each message is a run in a session of its own, owned by the caller (see
:class:`~tether.api.gateway.Gateway`); its answer is read from the session's
events through the relay, translated by
:class:`~tether.api.anthropic_api.events.MessageMapper`. When the model is an
Anthropic upstream's, the run sends it the request as the client wrote it
(sanitised: :attr:`~tether.api.anthropic_api.request.MessagesRequest.native`);
any other upstream gets the request translated.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from tether.agents.gateway import GatewaySpec
from tether.api.anthropic_api.count import COUNT_HEADER, counted_body, estimated
from tether.api.anthropic_api.errors import error_response
from tether.api.anthropic_api.events import MessageMapper
from tether.api.anthropic_api.request import MessagesRequest, parse_messages
from tether.api.gateway import Gateway, Started, Target
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, REPLAYED
from tether.api.openai.errors import OpenAIError, store_error
from tether.api.relay import EventStreamResponse, Follow
from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import ProviderError
from tether.sessions.service import QuotaExceeded
from tether.store.errors import BackendUnavailable, InsufficientStorage

log = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
#: The front's name in a session's ``metadata["gateway"]``.
FRONT = "messages"


class MessagesRoutes:
    """The Messages API's FastAPI routes (:attr:`router`), over the shared :class:`Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.router = APIRouter(tags=["anthropic"])
        add = self.router.add_api_route
        add(
            MESSAGES_PATH, self.messages, methods=["POST"], response_model=None,
            openapi_extra=IDEMPOTENCY_HEADER,
        )  # fmt: skip
        add(
            f"{MESSAGES_PATH}/count_tokens",
            self.count_tokens,
            methods=["POST"],
            response_model=None,
        )
        add(
            f"{MESSAGES_PATH}/{{session_id}}/stream",
            self.stream,
            methods=["GET"],
            response_model=None,
        )

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/messages`` as plain ASGI, as TetherApp serves it: FastAPI's routing,
        middleware and dependency handling skipped, as for chat completions (the route
        stays in :attr:`router` for the OpenAPI document)."""
        try:
            response = await self.messages(Request(scope, receive))
        except ClientDisconnect:
            return  # the client went, or its body was too slow: no one to answer
        except Exception:
            log.exception("message failed")
            response = error_response(
                OpenAIError(500, "The server had an error while processing your request.")
            )
        await response(scope, receive, send)

    async def messages(self, request: Request) -> Response:
        """Anthropic's Messages API, streamed or not (``anthropic-version`` accepted, not needed).

        With an ``Idempotency-Key``, a retry starts no second run. Closing a
        streamed answer stops its run after ``--gateway-detach-grace`` seconds
        unless the request says ``X-Tether-Detach: true``.
        """
        gateway = self.gateway
        try:
            try:
                who = gateway.caller(request)
                body, raw = await gateway.body(request)
                parsed = parse_messages(body)
                target = gateway.target(parsed.completion.spec.model)
                _aim(parsed, target)
                started = await gateway.start(
                    request, who, parsed.completion, target, path=MESSAGES_PATH, raw=raw
                )
            except QuotaExceeded as err:
                raise OpenAIError(429, str(err), type="rate_limit_error") from None
            except (BackendUnavailable, InsufficientStorage) as err:
                return error_response(store_error(err), {"retry-after": str(err.retry_after)})
        except OpenAIError as err:
            return error_response(err)
        response = await self._answer(request, started, parsed.completion.spec)
        if started.replayed:
            response.headers[REPLAYED] = "true"
        return response

    async def _answer(self, request: Request, started: Started, spec: GatewaySpec) -> Response:
        headers = started.headers(MESSAGES_PATH)
        mapper = _mapper(spec, frames=spec.stream)
        follow = self.gateway.follow(
            started, mapper, detach=self.gateway.detach(request), stream=spec.stream
        )
        if not spec.stream:
            await self.gateway.whole(follow, request)
            if mapper.error is not None:
                return error_response(mapper.error, headers)
            if not mapper.ok:
                return error_response(
                    OpenAIError(503, "The server is shutting down; read the stream URL later."),
                    headers,
                )
            return JSONResponse(mapper.whole(), headers=headers)
        # As the chat front does: hold the headers until the upstream accepted
        # the request or the model said something, so that an outright refusal
        # is an HTTP error, as from Anthropic; later errors come in the stream.
        if await self.gateway.accepted(started):
            return EventStreamResponse(follow, headers)
        return await _streamed(follow, mapper, headers)

    async def stream(self, session_id: str, request: Request) -> Response:
        """A message's stream again, from ``?offset=`` or ``Last-Event-ID`` on, nothing twice."""
        gateway = self.gateway
        try:
            who = gateway.caller(request, reading=session_id)
            record = await gateway.record(who, session_id, FRONT)
            if record is None:
                raise OpenAIError(404, f"No message {session_id}.")
            after = await gateway.resume_after(request, session_id, "message")
        except OpenAIError as err:
            return error_response(err)
        mapper = _mapper(GatewaySpec.from_metadata(record.metadata["gateway"]), frames=True)
        follow = await gateway.reread(session_id, mapper, after=after)
        return EventStreamResponse(follow, {"x-tether-session-id": session_id})

    async def count_tokens(self, request: Request) -> Response:
        """The input tokens of a Messages request: the upstream's count, or an estimate."""
        gateway = self.gateway
        try:
            gateway.caller(request)
            body, _ = await gateway.body(request)
            if isinstance(body, dict):  # counted without a max_tokens (none is required here)
                body = {**body, "max_tokens": 1 << 30, "stream": False}
            parsed = parse_messages(body)
            target = gateway.target(parsed.completion.spec.model)
            if isinstance(target.provider, AnthropicProvider):
                try:
                    count = await target.provider.count_tokens(
                        counted_body(parsed.native, target.model)
                    )
                except ProviderError as err:
                    raise OpenAIError(err.status or 502, str(err), type="api_error") from None
                how = "exact"
            else:
                count, how = estimated(parsed.completion), "estimate"
        except OpenAIError as err:
            return error_response(err)
        return JSONResponse({"input_tokens": count}, headers={COUNT_HEADER: how})


def _aim(parsed: MessagesRequest, target: Target) -> None:
    """Make the request the Messages front's, in its native form for an Anthropic model."""
    spec = parsed.completion.spec
    spec.front = FRONT
    if isinstance(target.provider, AnthropicProvider):
        spec.native = parsed.native


def _mapper(spec: GatewaySpec, *, frames: bool) -> MessageMapper:
    return MessageMapper(spec.model, max_tokens=spec.options.get("max_tokens"), frames=frames)


async def _streamed(follow: Follow, mapper: MessageMapper, headers: dict[str, str]) -> Response:
    """The event stream, once the model has said something (or an HTTP error if it failed first)."""
    head: list[bytes] = []
    async for frames in follow.frames:
        if frames is None:
            break
        head += frames
        if mapper.error is not None and not mapper.content:
            await follow.aclose()
            return error_response(mapper.error, headers)
        if mapper.content or mapper.ended is not None:
            break
    return EventStreamResponse(follow, headers, head=b"".join(head))
