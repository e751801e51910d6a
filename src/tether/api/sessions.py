"""The native session API: REST for sessions and inputs, SSE and WebSocket for events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import Response
from pydantic import Field
from starlette.websockets import WebSocketDisconnect

from tether.agents.tools import MAX_TOOLS, ToolRegistry
from tether.api.attachments import Attachments
from tether.api.auth import TOKEN_TTL, Auth, Caller, Unauthorized, session_resource
from tether.api.bodies import CheckedJSONRoute, StrictBody
from tether.api.gateway import AGENT_PREFIX
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, IdempotentRoute
from tether.api.relay import EventStreamResponse, Follow, uncancel_if_cut
from tether.observability import metrics
from tether.runtime.dispatch import WAITING
from tether.runtime.runner import InvalidInput, Runtime
from tether.sessions.attachments import BadAttachment, attachment_part
from tether.sessions.fold import SessionFold
from tether.sessions.service import (
    DEFAULT_TITLE,
    SessionNotFound,
    SessionRecord,
    SessionService,
    stream_name,
    title_from,
)
from tether.streams.wire import WireError, format_offset, parse_offset

MAX_TEXT = 1_000_000
#: The WebSocket close code of a reader cut off at its send buffer (1008, policy
#: violation: it did not read what it asked for); the reason says where to resume.
CUT_OFF_CLOSE = 1008
#: Sessions per page of a listing: by default, and at most.
DEFAULT_PAGE = 100
MAX_PAGE = 1000


class TextPart(StrictBody):
    type: Literal["text"] = "text"
    text: str = Field(max_length=MAX_TEXT)


class AttachmentPart(StrictBody):
    """An image or a file: ``data`` (base64, or a data URL) or, for an image, an http(s) ``url``."""

    type: Literal["image", "file"]
    media_type: str | None = Field(default=None, max_length=255)
    data: str | None = None
    url: str | None = None
    name: str | None = Field(default=None, max_length=1000)


Content = (
    Annotated[str, Field(max_length=MAX_TEXT)]
    | Annotated[
        list[Annotated[TextPart | AttachmentPart, Field(discriminator="type")]],
        Field(min_length=1),
    ]
)


#: Tools, as declared on a session or a message: server tools' names and
#: client tools' definitions ``{name, description, parameters}`` (checked by
#: the ToolRegistry, which says what is wrong with them).
Tools = Annotated[list[str | dict[str, Any]], Field(max_length=MAX_TOOLS)]


class CreateSession(StrictBody):
    model: str | None = Field(default=None, max_length=200)
    agent: str | None = Field(default=None, max_length=200)
    system: str | None = Field(default=None, max_length=MAX_TEXT)
    title: str | None = Field(default=None, max_length=500)
    tools: Tools | None = None


class UpdateSession(StrictBody):
    title: str | None = Field(default=None, max_length=500)
    archived: bool | None = None
    #: Replaces the session's tools (``[]`` removes them); runs from now on use them.
    tools: Tools | None = None
    #: A message id: the branch that ends there becomes the session's current one,
    #: for every reader (an ``active-branch`` event in its log).
    active_branch: str | None = Field(default=None, max_length=200)


class SendMessage(StrictBody):
    content: Content
    parent_id: str | None = None
    interrupt: bool = False
    #: Tools for this message's run, besides the session's (same name: this one).
    tools: Tools | None = None


class EditMessage(StrictBody):
    content: Content


class Regenerate(StrictBody):
    message_id: str


class Cancel(StrictBody):
    run_id: str | None = None


class ToolResult(StrictBody):
    tool_call_id: str
    output: Any = None
    error: str | None = None


class ReadTokenRequest(StrictBody):
    #: Seconds the token lives; an hour at most.
    ttl: float = Field(default=TOKEN_TTL, gt=0, le=TOKEN_TTL)


class ToolApproval(StrictBody):
    tool_call_id: str
    approved: bool
    reason: str | None = Field(default=None, max_length=10_000)
    #: The option chosen, when the call offers options (an ACP agent's permission request).
    option_id: str | None = Field(default=None, max_length=200)


def _parts(content: str | list[TextPart | AttachmentPart]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if not content.strip():
            raise InvalidInput("message content must not be empty")
        return [{"type": "text", "text": content}]
    out: list[dict[str, Any]] = []
    for i, p in enumerate(content):
        if isinstance(p, TextPart):
            out.append(p.model_dump())
            continue
        try:
            fields = {"media_type": p.media_type, "data": p.data, "url": p.url, "name": p.name}
            out.append(attachment_part(p.type, **fields))
        except BadAttachment as err:
            raise InvalidInput(f"content[{i}]: {err}") from None
    return out


async def current_caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query()] = None,
) -> Caller:
    """Resolved from the app's Auth (``app.state.auth``) for every request.

    ``async`` although it never awaits: FastAPI runs a plain ``def`` dependency
    in a worker thread, a hop per request (5-12% of a tool loop's profile) for
    a digest look-up or a small token's decryption.
    """
    auth: Auth = request.app.state.auth
    return auth.caller(authorization, token)


Who = Annotated[Caller, Depends(current_caller)]


def _writer(who: Caller) -> None:
    if who.read_only:
        raise Unauthorized("a read token can only read")


class SessionRoutes:
    """The native session API's FastAPI routes (:attr:`router`), each one a method.

    ``known_models`` answers ``(model, agent) -> error message or None``.
    """

    def __init__(
        self,
        sessions: SessionService,
        runtime: Runtime,
        auth: Auth,
        known_models: Callable[[str | None, str | None], str | None],
        stop: Callable[[], asyncio.Future[None]],
        tools: ToolRegistry,
        *,
        attachments: Attachments,
        waiting: Callable[[SessionRecord, SessionFold], Awaitable[bool]] | None = None,
        worker_agents: Collection[str] = (),
        send_buffer: int | None = None,
    ) -> None:
        """``waiting``: whether a run of a session waits for a tether worker (docs/workers.md);
        ``worker_agents``: the agents workers serve (only their sessions can wait so);
        ``send_buffer``: the bytes an event stream or WebSocket reader may have waiting
        for its client before it is cut off (``--sse-send-buffer``)."""
        self.send_buffer = send_buffer
        self.sessions = sessions
        self.waiting = waiting
        self.worker_agents = frozenset(worker_agents)
        self.runtime = runtime
        self.auth = auth
        self.known_models = known_models
        self.tools = tools
        self.stop = stop
        self.attachments = attachments
        self.router = APIRouter(
            prefix="/v1/sessions", tags=["sessions"], route_class=CheckedJSONRoute
        )
        # In this order: it is the OpenAPI document's. Handlers' names are its
        # operation ids and summaries, their docstrings its descriptions.
        add = self.router.add_api_route
        # The mutating routes take an Idempotency-Key (api/idempotent_routes.py).
        once: dict[str, Any] = {
            "route_class_override": IdempotentRoute,
            "openapi_extra": IDEMPOTENCY_HEADER,
        }
        add("", self.create_session, methods=["POST"], status_code=201, **once)
        add("", self.list_sessions, methods=["GET"])
        add("/{session_id}", self.get_session, methods=["GET"])
        add("/{session_id}", self.update_session, methods=["PATCH"])
        add("/{session_id}/archive", self.archive_session, methods=["POST"])
        add("/{session_id}", self.delete_session, methods=["DELETE"], status_code=204)
        add("/{session_id}/messages", self.send_message, methods=["POST"], status_code=202, **once)
        add(
            "/{session_id}/messages/{message_id}",
            self.edit_message,
            methods=["PATCH"],
            status_code=202,
            **once,
        )
        add("/{session_id}/regenerate", self.regenerate, methods=["POST"], status_code=202, **once)
        add("/{session_id}/cancel", self.cancel, methods=["POST"], status_code=202, **once)
        add(
            "/{session_id}/tool-results", self.tool_result, methods=["POST"], status_code=202,
            **once,
        )  # fmt: skip
        add(
            "/{session_id}/tool-approvals", self.tool_approval, methods=["POST"], status_code=202,
            **once,
        )  # fmt: skip
        add("/{session_id}/read-token", self.read_token, methods=["POST"])
        add("/{session_id}/events", self.events, methods=["GET"])
        add(
            "/{session_id}/attachments/{part_id}",
            self.get_attachment,
            methods=["GET"],
            response_class=Response,
            responses={200: {"content": {"*/*": {}}}},
        )
        self.router.add_api_websocket_route("/{session_id}/ws", self.websocket)

    async def _owned(self, session_id: str, who: Caller) -> None:
        if not who.may_read(session_resource(session_id)):
            raise SessionNotFound(session_id)
        await self.sessions.record(session_id, who.owner)

    # -- the routes ---------------------------------------------------------------

    async def create_session(self, who: Who, body: CreateSession | None = None) -> dict[str, Any]:
        _writer(who)
        body = body or CreateSession()  # every field is optional: no body is {}
        model, agent = body.model, body.agent
        if agent is None and model is not None and model.startswith(AGENT_PREFIX):
            agent = model.removeprefix(AGENT_PREFIX)  # as /v1/models lists it
            model = None
        problem = self.known_models(model, agent)
        if problem:
            raise InvalidInput(problem)
        tools = self.tools.check(body.tools) if body.tools is not None else []
        record = await self.sessions.create(
            owner=who.owner,
            model=model,
            agent=agent,
            system=body.system,
            title=body.title,
            tools=tools,
        )
        return _session_json(record.public(), "idle")

    async def list_sessions(
        self,
        who: Who,
        archived: bool = False,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        gateway: bool = False,
    ) -> dict[str, Any]:
        """The caller's sessions, latest update first, a page at a time (follow ``next_cursor``).

        Each with its ``status`` and ``usage`` totals. The OpenAI-compatible
        gateway's sessions only with ``gateway=true``, archived ones only with
        ``archived=true``.
        """
        _writer(who)
        records, after = await self.sessions.page(
            who.owner, archived=archived, limit=limit, after=cursor, gateway=gateway
        )
        sessions = [_session_json(r.public(), None) for r in records]
        if self.waiting is not None:
            for out, record in zip(sessions, records, strict=True):
                if record.agent in self.worker_agents:
                    fold = (await self.sessions.state(record.id)).fold
                    if await self.waiting(record, fold):
                        out["status"] = WAITING
        return {"sessions": sessions, "next_cursor": after}

    async def get_session(self, session_id: str, who: Who) -> dict[str, Any]:
        await self._owned(session_id, who)
        state = await self.sessions.state(session_id)
        snap = state.fold.snapshot()
        out = _session_json(state.record.public(), snap["status"])
        out.update(snap)
        if self.waiting is not None and await self.waiting(state.record, state.fold):
            out["status"] = WAITING
        out["offset"] = format_offset(state.position)
        return out

    async def update_session(
        self, session_id: str, body: UpdateSession, who: Who
    ) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        tools = self.tools.check(body.tools) if body.tools is not None else None
        if body.active_branch is not None and not await self.sessions.select_branch(
            session_id, body.active_branch
        ):
            raise InvalidInput(f"active_branch: this session has no message {body.active_branch}")
        record = await self.sessions.record(session_id)
        if tools is not None:
            record.tools = tools
        if body.title is not None:
            record.title = body.title
        if body.archived is not None:
            record.archived = body.archived
        await self.sessions.save(record)
        return _session_json(record.public(), None)

    async def archive_session(self, session_id: str, who: Who) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        record = await self.sessions.record(session_id)
        record.archived = True
        await self.sessions.save(record)
        return _session_json(record.public(), None)

    async def delete_session(self, session_id: str, who: Who) -> Response:
        _writer(who)
        await self._owned(session_id, who)
        await self.runtime.forget(session_id)
        await self.attachments.forget(session_id)
        await self.sessions.delete(session_id)
        return Response(status_code=204)

    async def send_message(self, session_id: str, body: SendMessage, who: Who) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        tools = self.tools.check(body.tools) if body.tools is not None else None
        parts, written = await self.attachments.admit(session_id, _parts(body.content))
        # A session created without a title is named after its first text message,
        # before the run starts (whose notes on the record then carry the title).
        record = await self.sessions.record(session_id)
        title = title_from(parts) if record.title == DEFAULT_TITLE else None
        if title is not None:
            await self.sessions.set_title(record, title)
        try:
            message_id, run_id, queued = await self.runtime.send(
                session_id, parts, parent_id=body.parent_id, interrupt=body.interrupt, tools=tools
            )
        except BaseException:
            await self.attachments.drop(written)
            if title is not None:
                await self.sessions.set_title(record, DEFAULT_TITLE)
            raise
        return {"message_id": message_id, "run_id": run_id, "queued": queued}

    async def edit_message(
        self, session_id: str, message_id: str, body: EditMessage, who: Who
    ) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        parts, written = await self.attachments.admit(session_id, _parts(body.content))
        try:
            new_id, run_id, queued = await self.runtime.edit(session_id, message_id, parts)
        except BaseException:
            await self.attachments.drop(written)
            raise
        return {"message_id": new_id, "run_id": run_id, "queued": queued}

    async def get_attachment(self, session_id: str, part_id: str, who: Who) -> Response:
        """An image or file of a user message (``part_id`` as in the snapshot), as it was sent.

        Readable by whoever may read the session, read tokens included.
        """
        await self._owned(session_id, who)
        return await self.attachments.response(session_id, part_id)

    async def regenerate(self, session_id: str, body: Regenerate, who: Who) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        run_id, queued = await self.runtime.regenerate(session_id, body.message_id)
        return {"run_id": run_id, "queued": queued}

    async def cancel(self, session_id: str, who: Who, body: Cancel | None = None) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        cancelled = await self.runtime.cancel(session_id, body.run_id if body else None)
        return {"cancelled": cancelled}

    async def tool_result(self, session_id: str, body: ToolResult, who: Who) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        await self.runtime.tool_result(session_id, body.tool_call_id, body.output, body.error)
        return {"ok": True}

    async def tool_approval(self, session_id: str, body: ToolApproval, who: Who) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        await self.runtime.tool_approval(
            session_id, body.tool_call_id, body.approved, body.reason, body.option_id
        )
        return {"ok": True}

    async def read_token(
        self, session_id: str, who: Who, body: ReadTokenRequest | None = None
    ) -> dict[str, Any]:
        _writer(who)
        await self._owned(session_id, who)
        ttl = body.ttl if body is not None else TOKEN_TTL
        token, expires = self.auth.read_token(session_resource(session_id), who.owner, ttl)
        return {"token": token, "expires_at": expires}

    async def events(
        self,
        session_id: str,
        who: Who,
        offset: str | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        await self._owned(session_id, who)
        raw = last_event_id or offset or "-1"
        position = parse_offset(raw)
        if position is None:
            position = await self.sessions.end_position(session_id)
        follow = Follow(self.sessions, session_id, position, SSEFrames(), stop=self.stop(),
                        send_buffer=self.send_buffer)  # fmt: skip
        return EventStreamResponse(follow, {}, head=b"retry: 1000\n\n")

    async def websocket(self, ws: WebSocket, session_id: str, offset: str | None = None) -> None:
        try:
            who = self.auth.caller(ws.headers.get("authorization"), ws.query_params.get("token"))
            await self._owned(session_id, who)
            position = parse_offset(offset or "-1")
        except (Unauthorized, SessionNotFound, WireError) as err:
            await ws.close(code=4404 if isinstance(err, SessionNotFound) else 4400, reason=str(err))
            return
        await ws.accept()
        if position is None:
            position = await self.sessions.end_position(session_id)
        follow = Follow(self.sessions, session_id, position, SocketFrames(), stop=self.stop(),
                        send_buffer=self.send_buffer)  # fmt: skip
        with metrics.WEBSOCKET_READERS.track_inprogress(), contextlib.suppress(WebSocketDisconnect):
            written = b""
            try:
                async for frames in follow.frames:
                    for frame in frames or ():
                        await ws.send_text(frame.decode())
                        written = frame
            except asyncio.CancelledError:
                if not uncancel_if_cut(follow, "websocket"):
                    raise
                resume = orjson.loads(written)["offset"] if written else None
                # Let go of the session first: the close waits for a client that does not read.
                await follow.aclose()
                await ws.close(code=CUT_OFF_CLOSE, reason=follow.cut_off_reason(resume))
                return
            finally:
                await follow.aclose()
            await ws.close()


class SSEFrames:
    """The native event stream: each event as it is stored, ``id:`` its offset after it."""

    finished = False

    def frame(self, position: int, event: bytes) -> bytes:
        return b"id: " + format_offset(position).encode() + b"\ndata: " + event + b"\n\n"

    def last(self) -> bytes:
        return b""


class SocketFrames:
    """The WebSocket's messages: ``{"offset": <after the event>, "event": <the event>}``."""

    finished = False

    def frame(self, position: int, event: bytes) -> bytes:
        return b'{"offset":"' + format_offset(position).encode() + b'","event":' + event + b"}"

    def last(self) -> bytes:
        return b""


def _session_json(public: dict[str, Any], status: str | None) -> dict[str, Any]:
    out = dict(public)
    out["stream_url"] = f"/v1/stream/{stream_name(public['id'])}"
    if status is not None:
        out["status"] = status
    return out
