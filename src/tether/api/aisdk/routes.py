"""The AI SDK's routes: a chat's requests placed in its session, its runs streamed back.

See the package's docstring for how what the client sends is matched to the
session; the stream is the relay's, translated by
:class:`~tether.api.aisdk.translate.UIFrames`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse

from tether.agents.tools import ToolRegistry
from tether.api.aisdk.chats import CHATS, Chat, ChatLocks, HistoryMismatch, chat_key
from tether.api.aisdk.request import (
    ChatRequest,
    UIMessageIn,
    is_empty_assistant,
    new_user_parts,
    seed_events,
    text_parts,
    title_of,
    tool_declarations,
)
from tether.api.aisdk.translate import RunTranslator, UIFrames
from tether.api.attachments import Attachments
from tether.api.auth import Caller, Unauthorized, session_resource
from tether.api.bodies import CheckedJSONRoute
from tether.api.detach import HEADER as DETACH_HEADER
from tether.api.detach import Readers, detach_requested
from tether.api.idempotency import HEADER, Idempotency, check_key, fingerprint
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, REPLAYED
from tether.api.relay import EventStreamResponse
from tether.api.sessions import Who
from tether.runtime.runner import InvalidInput, Runtime
from tether.sessions import events as ev
from tether.sessions.service import SessionNotFound, SessionService

#: Sessions whose latest run-start position is remembered (a scan's lower bound).
MAX_HINTS = 10_000
SCAN_CHUNK = 1024 * 1024

UI_STREAM_HEADERS = {
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}


class AISDKRoutes:
    """The AI SDK's routes (:attr:`router`) and what they do to a chat's session.

    ``known_models`` answers ``(model, agent) -> error message or None``.
    """

    def __init__(
        self,
        sessions: SessionService,
        runtime: Runtime,
        known_models: Callable[[str | None, str | None], str | None],
        stop: Callable[[], asyncio.Future[None]],
        tools: ToolRegistry,
        *,
        attachments: Attachments,
        idempotency: Idempotency,
        readers: Readers,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.known_models = known_models
        self.stop = stop
        self.tools = tools
        self.attachments = attachments
        self.idempotency = idempotency
        #: Who reads each run: a chat sent with ``X-Tether-Detach: false`` stops
        #: when its readers have gone.
        self.readers = readers
        self._locks = ChatLocks()
        #: Session id -> position of the latest run-start seen (runs start in order,
        #: so the active run's run-start is at or after it).
        self._hints: OrderedDict[str, int] = OrderedDict()
        self.router = APIRouter(
            prefix="/v1/aisdk", tags=["vercel-ai-sdk"], route_class=CheckedJSONRoute
        )
        self.router.add_api_route(
            "/chat",
            self.chat,
            methods=["POST"],
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}},
            openapi_extra=IDEMPOTENCY_HEADER,
        )
        self.router.add_api_route(
            "/chat/{chat_id}/stream",
            self.resume,
            methods=["GET"],
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 204: {}},
        )

    # -- the routes -------------------------------------------------------------

    async def chat(self, body: ChatRequest, who: Who, request: Request) -> Response:
        """useChat's DefaultChatTransport: send or regenerate, answered as a UI message stream.

        With an ``Idempotency-Key``, a retry starts no second run: it gets the
        first request's run, streamed from its start.
        """
        if who.read_only:
            raise Unauthorized("a read token can only read")
        key = request.headers.get(HEADER)
        # A chat UI's run goes on when the page closes (it resumes on reload),
        # unless the request asks otherwise.
        watch = not detach_requested(request.headers.get(DETACH_HEADER), default=True)
        if key is None:
            sid, run_id, position = await self.submit(body, who.owner)
            return self.response(sid, run_id, position, watch=watch)
        return await self._chat_once(body, who, check_key(key), await request.body(), watch)

    async def _chat_once(
        self, body: ChatRequest, who: Caller, key: str, raw: bytes, watch: bool
    ) -> Response:
        async def submit() -> list[Any]:
            return list(await self.submit(body, who.owner))

        request = fingerprint("POST", "/v1/aisdk/chat", hashlib.sha256(raw).hexdigest())
        outcome = await self.idempotency.once(who.owner, key, request, submit)
        sid, run_id, position = outcome.value
        if not outcome.replayed:
            return self.response(sid, run_id, position, watch=watch)
        await self.sessions.record(sid, who.owner)  # 404 if it was deleted since
        response = self.response(sid, run_id, position)
        response.headers[REPLAYED] = "true"
        return response

    async def resume(self, chat_id: Annotated[str, Path(max_length=200)], who: Who) -> Response:
        """useChat's resume: the active run's stream from its start, or 204 when idle."""
        found = await self.active(chat_id, who)
        if found is None:
            return Response(status_code=204)
        return self.response(*found)

    # -- chats ----------------------------------------------------------------

    async def _chat(self, key: str, owner: str | None) -> Chat | None:
        raw = await self.sessions.get_extra(CHATS, key)
        if raw is None:
            return None
        chat = Chat.from_bytes(key, raw)
        try:
            await self.sessions.record(chat.session_id, owner)
        except SessionNotFound:
            return None  # the session was deleted: the chat starts afresh
        return chat

    async def _save(self, chat: Chat) -> None:
        await self.sessions.put_extra(CHATS, chat.key, chat.to_bytes())

    # -- POST /v1/aisdk/chat ----------------------------------------------------

    async def submit(self, body: ChatRequest, owner: str | None) -> tuple[str, str, int]:
        """Place the client's input; returns (session id, run id, stream position before)."""
        messages = body.messages
        # Everything the request can be refused for is checked before anything is written.
        for msg in messages:
            if msg.role == "user":
                text_parts(msg)
        parts: list[dict[str, Any]] = []
        if body.trigger == "submit-message":
            if not messages:
                raise InvalidInput("messages must not be empty")
            parts = new_user_parts(messages[-1])
        elif not body.messageId and not messages:
            raise InvalidInput("regenerate-message needs a messageId or messages")
        tools = None if body.tools is None else self.tools.check(tool_declarations(body.tools))

        key = chat_key(owner, body.id)
        async with self._locks.hold(key):
            chat = await self._chat(key, owner)
            created = chat is None
            if chat is None:
                problem = self.known_models(body.model, body.agent)
                if problem:
                    raise InvalidInput(problem)
                record = await self.sessions.create(
                    owner=owner,
                    model=body.model,
                    agent=body.agent,
                    system=body.system,
                    title=title_of(messages),
                    metadata={"aisdk_chat_id": body.id},
                )
                chat = Chat(key, body.id, record.id)
            written: list[str] = []
            try:
                parts, written = await self.attachments.admit(chat.session_id, parts)
                return await self._place(body, chat, parts, created, tools)
            except BaseException:
                await self.attachments.drop(written)
                if created:  # a request that fails leaves neither a session nor a chat
                    await self.runtime.forget(chat.session_id)
                    await self.sessions.delete(chat.session_id)
                raise

    async def _place(
        self,
        body: ChatRequest,
        chat: Chat,
        parts: list[dict[str, Any]],
        created: bool,
        tools: list[Any] | None,
    ) -> tuple[str, str, int]:
        """Send, edit or regenerate in the chat's session; saves the chat last."""
        messages = body.messages
        sid = chat.session_id
        position = await self.sessions.end_position(sid)
        known = (await self.sessions.state(sid)).fold.messages

        if body.trigger == "submit-message":
            last = messages[-1]
            if not created and chat.tether_id(last.id) in known:
                # useChat's sendMessage({text, messageId}): an edit, a new branch.
                mid, run_id, _ = await self.runtime.edit(
                    sid, chat.tether_id(last.id), parts, tools=tools
                )
            else:
                parent = await self._place_history(chat, messages[:-1], known, created)
                mid, run_id, _ = await self.runtime.send(sid, parts, parent_id=parent, tools=tools)
            chat.ids[last.id] = mid
        else:
            target_id = body.messageId or messages[-1].id
            await self._place_history(chat, messages, known, created)
            known = (await self.sessions.state(sid)).fold.messages
            target = chat.tether_id(target_id)
            if target not in known:
                raise HistoryMismatch(f"message {target_id} is not in this chat's session")
            run_id, _ = await self.runtime.regenerate(sid, target)
        await self._save(chat)
        return sid, run_id, position

    async def _place_history(
        self, chat: Chat, history: list[UIMessageIn], known: dict[str, Any], created: bool
    ) -> str | None:
        """The tether id the next message follows; seeds a new session's history."""
        history = [m for m in history if m.role != "system" and not is_empty_assistant(m)]
        if not history:
            return None
        if created:
            batch, parent = seed_events(chat, history, None)
            batch, _ = await self.attachments.admit_events(chat.session_id, batch)
            if batch:
                await self.sessions.append(chat.session_id, batch)
            return parent
        # A message sent here whose run was cancelled while queued never entered the
        # session, but the client keeps it: it is known, and skipped as a parent.
        unknown = [m.id for m in history if m.id not in chat.ids and m.id not in known]
        if unknown:
            raise HistoryMismatch(
                f"the chat's session does not have message(s) {', '.join(unknown[:5])}: "
                "tether only adds to a session's history; send the new message alone "
                "(the session's history is used) or use a new chat id"
            )
        placed = [chat.tether_id(m.id) for m in history if chat.tether_id(m.id) in known]
        return placed[-1] if placed else None

    # -- GET /v1/aisdk/chat/{id}/stream ---------------------------------------------

    async def active(self, chat_id: str, who: Caller) -> tuple[str, str, int] | None:
        """(session id, run id, position of its run-start) of the chat's active run."""
        chat = await self._chat(chat_key(who.owner, chat_id), who.owner)
        if chat is None or not who.may_read(session_resource(chat.session_id)):
            return None
        sid = chat.session_id
        run = (await self.sessions.state(sid)).fold.active_run
        if run is None:
            return None
        position = await self._find_run_start(sid, run["run_id"])
        return None if position is None else (sid, run["run_id"], position)

    async def _find_run_start(self, session_id: str, run_id: str) -> int | None:
        hint = self._hints.get(session_id, 0)
        for start in (hint, 0) if hint else (0,):
            position = start
            while True:
                res = await self.sessions.read_events(session_id, position, SCAN_CHUNK)
                for i, raw in enumerate(res.chunks):
                    if b'"run-start"' in raw:
                        e = orjson.loads(raw)
                        if e.get("type") == ev.RUN_START and e.get("run_id") == run_id:
                            self._remember(session_id, res.start + i)
                            return res.start + i
                position = res.next
                if res.up_to_date or not res.chunks:
                    break
        return None

    def _remember(self, session_id: str, position: int) -> None:
        self._hints[session_id] = max(position, self._hints.get(session_id, 0))
        self._hints.move_to_end(session_id)
        while len(self._hints) > MAX_HINTS:
            self._hints.popitem(last=False)

    # -- the stream -------------------------------------------------------------

    def response(
        self, session_id: str, run_id: str, position: int, *, watch: bool = False
    ) -> Response:
        """The run's UI message stream, from ``position`` (before or at its run-start).

        ``watch``: the run stops when its readers have gone (``api/detach.py``).
        """
        frames = UIFrames(
            RunTranslator(run_id, session_id), lambda at: self._remember(session_id, at)
        )
        follow = self.readers.follow(
            self.sessions, session_id, run_id, position, frames, stop=self.stop(), watch=watch
        )
        headers = {
            **UI_STREAM_HEADERS,
            "x-tether-session-id": session_id,
            "x-tether-run-id": run_id,
        }
        return EventStreamResponse(follow, headers)
