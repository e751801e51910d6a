"""The gateway's routes: Chat Completions, its stream replays, and the model list.

Each completion is a run in a session of its own, owned by the caller: the
request's earlier turns are seeded into a new session, the last user message is
sent (or, when the request ends with tool results, the run continues the
conversation), and the answer is read from the session's events through the
relay, translated by :class:`~tether.api.openai.chunks.ChunkMapper`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from tether.agents.gateway import GatewaySpec, Prefetch, Prefetches, model_request
from tether.api.attachments import Attachments
from tether.api.auth import Auth, Caller, Unauthorized, session_resource
from tether.api.idempotency import (
    HEADER,
    BadIdempotencyKey,
    Idempotency,
    IdempotencyConflict,
    check_key,
    fingerprint,
)
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, REPLAYED
from tether.api.openai.chunks import ChunkMapper
from tether.api.openai.errors import OpenAIError, auth_header, invalid, store_error
from tether.api.openai.request import Completion, parse_completion
from tether.api.relay import EventStreamResponse, Follow
from tether.providers.base import ChatMessage, Provider, prefetching
from tether.providers.registry import ProviderRegistry, UnknownModel
from tether.runtime.runner import Runtime
from tether.sessions.attachments import is_attachment
from tether.sessions.service import QuotaExceeded, SessionNotFound, SessionRecord, SessionService
from tether.store.errors import BackendUnavailable, InsufficientStorage
from tether.streams import json_body
from tether.streams.json_body import JsonLimits
from tether.streams.wire import WireError, format_offset, parse_offset

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

    def __init__(
        self,
        sessions: SessionService,
        runtime: Runtime,
        auth: Auth,
        registry: ProviderRegistry,
        stop: Callable[[], asyncio.Future[None]],
        prefetches: Prefetches,
        *,
        max_body: int = 10 * 1024 * 1024,
        json_limits: JsonLimits = JsonLimits(),  # noqa: B008 - frozen, never mutated
        agents: Callable[[], list[str]] = list,
        attachments: Attachments,
        idempotency: Idempotency,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.auth = auth
        self.registry = registry
        self.stop = stop
        #: Where a completion's prefetched upstream response waits for its run.
        self.prefetches = prefetches
        self.max_body = max_body
        self.json_limits = json_limits
        self.agents = agents
        self.attachments = attachments
        self.idempotency = idempotency
        self.started = int(time.time())
        self.router = APIRouter(tags=["openai"])
        add = self.router.add_api_route
        add(
            COMPLETIONS_PATH, self.chat_completions, methods=["POST"], response_model=None,
            openapi_extra=IDEMPOTENCY_HEADER,
        )  # fmt: skip
        add("/v1/models", self.models, methods=["GET"], response_model=None)
        add(
            "/v1/chat/completions/{session_id}/stream",
            self.completion_stream,
            methods=["GET"],
            response_model=None,
        )

    # -- the routes ---------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        """OpenAI's Chat Completions, streamed or not; see the module's docstring.

        With an ``Idempotency-Key``, a retry starts no second run: it gets the
        first request's run, answered from its start.
        """
        try:
            who = self._caller(request)
            key = _idempotency_key(request)
            body, raw = await self._read_body(request)
            req = parse_completion(body)
            provider, model = self._check_model(req.spec.model)
            problem = self.attachments.refusal(req.spec.model, None, req.send or [])
            if problem:
                raise invalid(f"Invalid content: {problem}.", "messages", "unsupported_content")
            if key is not None:
                return await self._completion_once(who, key, raw, req, provider, model)
            sid, run_id, start, prefetch = await self._start(who, req, provider, model)
        except OpenAIError as err:
            return err.response(auth_header(err))
        except QuotaExceeded as err:
            return OpenAIError(
                429, str(err), type="insufficient_quota", code="insufficient_quota"
            ).response()
        return await self._answer(sid, run_id, start, req, prefetch)

    async def _completion_once(
        self,
        who: Caller,
        key: str,
        raw: bytes,
        req: Completion,
        provider: Provider,
        model: str,
    ) -> Response:
        """The completion's run started once under ``key``; a retry is answered from that run."""
        prefetches: list[Prefetch | None] = []

        async def start() -> list[Any]:
            sid, run_id, start, prefetch = await self._start(who, req, provider, model)
            prefetches.append(prefetch)
            return [sid, run_id, start]

        digest = hashlib.sha256(raw).hexdigest()
        try:
            outcome = await self.idempotency.once(
                who.owner, key, fingerprint("POST", COMPLETIONS_PATH, digest), start
            )
        except IdempotencyConflict as err:
            raise OpenAIError(409, str(err), code=err.code) from None
        sid, run_id, at = outcome.value
        if not outcome.replayed:
            return await self._answer(sid, run_id, at, req, prefetches[0])
        try:
            await self.sessions.record(sid, who.owner)
        except SessionNotFound:
            raise OpenAIError(
                404, "The completion of this Idempotency-Key was deleted.", code="not_found"
            ) from None
        response = await self._answer(sid, run_id, at, req, None)
        response.headers[REPLAYED] = "true"
        return response

    async def _start(
        self, who: Caller, req: Completion, provider: Provider, model: str
    ) -> tuple[str, str, int, Prefetch | None]:
        """A new completion's run: (session id, run id, stream position before it, prefetch)."""
        # Ask the upstream now: the session is set up while it thinks.
        prefetch = _prefetch(req, provider, model)
        if prefetch is not None:
            # Yield once before the set-up below: the requests that arrived with
            # this one get their upstream requests written first (and an unwritten
            # prefetch's task writes this one), so a burst's set-ups run while the
            # upstream thinks instead of each delaying the next one's request.
            await asyncio.sleep(0)
        record, run_id, start = await self._set_up(who, req, prefetch)
        return record.id, run_id, start, prefetch

    async def _answer(
        self, sid: str, run_id: str, start: int, req: Completion, prefetch: Prefetch | None
    ) -> Response:
        """The answer of a completion's run, read from its session from ``start``."""
        headers = {
            "x-tether-session-id": sid,
            "x-tether-run-id": run_id,
            "x-tether-stream-url": (
                f"/v1/chat/completions/{sid}/stream?offset={format_offset(start)}"
            ),
        }
        mapper = ChunkMapper(req.spec, frames=req.spec.stream)
        follow = Follow(
            self.sessions, sid, start, mapper, stop=self.stop(),
            on_end=lambda: self.prefetches.discard(sid),
        )  # fmt: skip
        if not req.spec.stream:
            return await _whole(follow, mapper, headers)
        # Hold the headers until the upstream has accepted the request (its
        # answer's head came back 2xx) or the model has said something, so that
        # a request the upstream refuses outright gets an HTTP error, as from
        # OpenAI. Errors after that come in the stream, as they do from OpenAI.
        answered = prefetch.answered if prefetch is not None else None
        if answered is not None and (run := self.runtime.run_task(sid, run_id)) is not None:
            # A run that ends without taking the prefetch drops it: the wait ends.
            run.add_done_callback(lambda _: self.prefetches.discard(sid))
            if 200 <= await answered < 300:
                return EventStreamResponse(follow, headers)
        return await _streamed(follow, mapper, headers)

    async def models(self, request: Request) -> Response:
        """The configured upstreams' models, ``demo`` and this server's agents (``agent:<name>``).

        Authenticated like the rest of OpenAI's API: with keys configured, the
        list is for key holders only.
        """
        try:
            self._caller(request)
        except OpenAIError as err:
            return err.response(auth_header(err))
        names = self.registry.list_models() + [f"agent:{a}" for a in self.agents()]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": self.started, "owned_by": "tether"}
                    for n in names
                ],
            }
        )

    async def completion_stream(self, session_id: str, request: Request) -> Response:
        """A completion's chunks again, from ``?offset=`` or ``Last-Event-ID`` on."""
        try:
            who = self._caller(request, reading=session_id)
            try:
                record = await self.sessions.record(session_id, who.owner)
            except SessionNotFound:
                record = None
            if record is None or not record.metadata.get("gateway"):
                raise OpenAIError(
                    404, f"No chat completion {session_id}.", param="session_id",
                    code="not_found",
                )  # fmt: skip
            raw = request.headers.get("last-event-id") or request.query_params.get("offset")
            tail_at = await self.sessions.end_position(session_id)
            try:
                after = parse_offset(raw or "-1")
            except WireError as err:
                raise invalid(str(err), "offset") from None
            after = tail_at if after is None else after
            if after > tail_at:
                raise invalid("offset is beyond the end of this completion's stream", "offset")
        except OpenAIError as err:
            return err.response(auth_header(err))
        mapper = ChunkMapper(GatewaySpec.from_metadata(record.metadata["gateway"]))
        follow = Follow(
            self.sessions, session_id, 0, mapper, stop=self.stop(), after=after,
            on_end=lambda: self.prefetches.discard(session_id),
        )  # fmt: skip
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

    # -- steps ------------------------------------------------------------------

    async def _set_up(
        self, who: Caller, req: Completion, prefetch: Prefetch | None
    ) -> tuple[SessionRecord, str, int]:
        """The completion's session and run: (record, run id, stream position before the run).

        A request that fails leaves no session behind, and drops its prefetch.
        """
        record = None
        try:
            record = await self.sessions.create(
                owner=who.owner,
                model=req.spec.model,
                agent=None,
                system=req.system,
                title=req.title,
                metadata={"gateway": req.spec.to_metadata()},
            )
            if prefetch is not None:
                self.prefetches.put(record.id, prefetch)
            leaf, start = None, 0  # a new session's stream is empty
            if req.seed:
                leaf = await self.runtime.seed(record.id, req.seed)
                start = await self.sessions.end_position(record.id)
            if req.send is not None:
                send, _ = await self.attachments.admit(record.id, req.send)
                _, run_id, _ = await self.runtime.send(record.id, send)
            else:
                assert leaf is not None
                run_id, _ = await self.runtime.answer(record.id, leaf)
            return record, run_id, start
        except QuotaExceeded:
            if prefetch is not None:
                prefetch.discard()
            raise
        except BaseException:
            if prefetch is not None:
                prefetch.discard()
            if record is not None:
                await self.runtime.forget(record.id)
                await self.sessions.delete(record.id)
            raise

    def _caller(self, request: Request, *, reading: str | None = None) -> Caller:
        """The caller, or OpenAIError 401; a read token only reads session ``reading``."""
        token = request.query_params.get("token") if reading is not None else None
        try:
            who = self.auth.caller(request.headers.get("authorization"), token)
        except Unauthorized:
            if request.headers.get("authorization"):
                raise OpenAIError(
                    401, "Incorrect API key provided.", code="invalid_api_key"
                ) from None
            raise OpenAIError(
                401,
                "You didn't provide an API key. Send a tether key in an Authorization header "
                "(Authorization: Bearer <key>).",
            ) from None
        if who.read_only and (reading is None or not who.may_read(session_resource(reading))):
            raise OpenAIError(401, "A read token cannot do this.", code="invalid_api_key")
        return who

    async def _read_body(self, request: Request) -> tuple[Any, bytes]:
        """The body's JSON value, and its bytes."""
        max_body = self.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise OpenAIError(413, f"The request body is larger than {max_body} bytes.")
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > max_body:
                raise OpenAIError(413, f"The request body is larger than {max_body} bytes.")
        data = bytes(raw)
        try:
            value = json_body.parse(data, self.json_limits)
            json_body.check_value(value, self.json_limits)  # what a session's events can carry
            return value, data
        except json_body.JsonTooLarge as err:
            raise OpenAIError(413, str(err)) from None
        except WireError as err:
            raise invalid(
                "We could not parse the JSON body of your request. The request body must be "
                f"valid JSON ({err})."
            ) from None

    def _check_model(self, model: str) -> tuple[Provider, str]:
        if model.startswith("agent:"):
            raise invalid(
                f"The model `{model}` is an agent; agents are served by the session API "
                "(/v1/sessions), not by /v1/chat/completions.",
                "model",
                "model_not_supported",
            )
        try:
            return self.registry.resolve(model)
        except UnknownModel:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            ) from None


async def _whole(follow: Follow, mapper: ChunkMapper, headers: dict[str, str]) -> Response:
    """A completion answered in one ``chat.completion`` once its run has ended."""
    try:
        async for _ in follow.frames:
            pass
    finally:
        await follow.aclose()
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


def _idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, checked (OpenAIError 400); None without one."""
    raw = request.headers.get(HEADER)
    try:
        return None if raw is None else check_key(raw)
    except BadIdempotencyKey as err:
        raise invalid(str(err), "Idempotency-Key", err.code) from None


def _prefetch(req: Completion, provider: Provider, model: str) -> Prefetch | None:
    """Start the upstream request of a completion before its session exists.

    Only for plain conversations (no tool calls in the history), whose upstream
    messages are known from the request alone, and for providers whose request
    depends on nothing else (a PrefetchingProvider: not the demo model, which
    seeds its answer with the run id); the run checks that it would have sent
    exactly this request before it takes the response.
    """
    if req.send is None or not prefetching(provider) or any(is_attachment(p) for p in req.send):
        return None  # attachments: the run may send them from their stream, not as given
    messages = [ChatMessage("system", req.system)] if req.system else []
    for turn in req.seed:
        if turn["role"] == "user":
            messages.append(ChatMessage("user", turn["text"]))
        elif turn.get("tool_calls"):
            return None
        else:
            messages.append(ChatMessage("assistant", turn["text"], []))
    messages.append(ChatMessage("user", "".join(p["text"] for p in req.send)))
    return Prefetch(provider, model_request(model, messages, req.spec))
