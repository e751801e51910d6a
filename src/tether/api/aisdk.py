"""The Vercel AI SDK front: ``useChat``'s transport, answered by tether sessions.

``POST /v1/aisdk/chat`` takes the body the AI SDK's ``DefaultChatTransport``
sends (``{id, messages, trigger, messageId, ...body}``) and answers with the UI
message stream protocol (SSE, ``x-vercel-ai-ui-message-stream: v1``).
``GET /v1/aisdk/chat/{id}/stream`` is the transport's ``reconnectToStream``:
204 when the chat has no active run, else that run's stream from its start
(``useChat({resume: true})`` replays it into a fresh assistant message).

A chat id maps to one tether session, created on first use and owned by the
caller; the mapping (and, for user messages, client message id -> tether
message id) is a record in the store, keyed by caller and chat id, so two
callers never share a chat. What the client sends is matched to the session:

- ``submit-message`` whose last message is new: that message is sent
  (``runtime.send``), after the client's previous message. Earlier messages are
  not sent again.
- ``submit-message`` whose last message the session already has (useChat's
  ``sendMessage({text, messageId})``): an edit, a new branch answered afresh.
- ``regenerate-message``: ``runtime.regenerate`` of ``messageId`` (or of the
  last message of ``messages``).
- History the session does not have: a chat seen for the first time is seeded
  with it (user and assistant messages, text, reasoning and tool calls with
  their results, appended as one batch before the new message), so an app can
  move an existing conversation onto tether. For a chat that already has a
  session, every earlier message must be one the session knows or one sent
  here (empty assistant messages aside), else 409: tether's log is the source
  of truth and is never rewritten. A client that sends only the new message
  continues the session's current branch.

Each run's stream is the session's events of that run, translated: the same
translation serves the POST and the replay, so both give the same message.
The ``start`` chunk names tether's assistant message id (so the client's
assistant messages carry tether ids) and carries ``messageMetadata.tether`` =
``{sessionId, runId}``: a client answers tool calls, approvals and cancels with
the native session API under that session id. Runs are detached from the HTTP
request: a client that goes away does not stop the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tether.api.auth import Caller, Unauthorized, session_resource
from tether.api.bodies import CheckedJSONRoute
from tether.api.relay import EventStreamResponse, Follow
from tether.api.sessions import MAX_TEXT, Who
from tether.runtime.runner import Conflict, InvalidInput, Runtime
from tether.sessions import events as ev
from tether.sessions.service import SessionNotFound, SessionService

#: Store records namespace: one record per (caller, chat id).
CHATS = "aisdk-chats"
MAX_MESSAGES = 10_000
#: Sessions whose latest run-start position is remembered (a scan's lower bound).
MAX_HINTS = 10_000
SCAN_CHUNK = 1024 * 1024

UI_STREAM_HEADERS = {
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
DONE = b"data: [DONE]\n\n"

Chunk = dict[str, Any]


class HistoryMismatch(Conflict):
    """The client's history has messages the chat's session does not."""


# -- request body -----------------------------------------------------------------


class UIMessageIn(BaseModel):
    """A UIMessage as the AI SDK sends it; unknown fields are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """DefaultChatTransport's body, plus the transport's ``body`` option's fields."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    messages: list[UIMessageIn] = Field(default_factory=list, max_length=MAX_MESSAGES)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(default=None, max_length=200)
    #: Used when the chat's session is created; ignored afterwards.
    model: str | None = Field(default=None, max_length=200)
    agent: str | None = Field(default=None, max_length=200)
    system: str | None = Field(default=None, max_length=MAX_TEXT)


# -- chats: chat id -> session ----------------------------------------------------


@dataclass(slots=True)
class Chat:
    key: str
    chat_id: str
    session_id: str
    #: Client message id -> tether message id, for messages whose ids differ
    #: (user messages; seeded messages). Assistant messages of tether's runs
    #: carry tether's ids on the client already.
    ids: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {"chat_id": self.chat_id, "session_id": self.session_id, "ids": self.ids}
        )

    @classmethod
    def from_bytes(cls, key: str, raw: bytes) -> Chat:
        d = orjson.loads(raw)
        return cls(key, d["chat_id"], d["session_id"], dict(d.get("ids", {})))

    def tether_id(self, client_id: str) -> str:
        return self.ids.get(client_id, client_id)


def chat_key(owner: str | None, chat_id: str) -> str:
    """Chats are per caller: two keys may pick the same (client-generated) chat id."""
    return hashlib.sha256(f"{owner or ''}\0{chat_id}".encode()).hexdigest()[:40]


class _Locks:
    """One asyncio lock per chat key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# -- UI messages -> tether ----------------------------------------------------------


def _text_parts(msg: UIMessageIn) -> list[dict[str, Any]]:
    """A user message's text parts; file parts are refused, other kinds ignored."""
    out: list[dict[str, Any]] = []
    for part in msg.parts:
        kind = part.get("type")
        if kind == "file":
            raise InvalidInput("file parts are not supported; send text parts")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidInput(f"message {msg.id}: a text part needs a string text")
            if len(text) > MAX_TEXT:
                raise InvalidInput(f"message {msg.id}: text longer than {MAX_TEXT} characters")
            out.append({"type": "text", "text": text})
    return out


def _new_user_parts(msg: UIMessageIn) -> list[dict[str, Any]]:
    if msg.role != "user":
        raise InvalidInput(
            "the last message of a submit-message must be a user message (tether answers "
            "tool calls through POST /v1/sessions/{sessionId}/tool-results)"
        )
    parts = _text_parts(msg)
    if not any(p["text"].strip() for p in parts):
        raise InvalidInput("message content must not be empty")
    return parts


def _is_empty_assistant(msg: UIMessageIn) -> bool:
    """An assistant message with nothing in it (e.g. a run cancelled while queued)."""
    return msg.role == "assistant" and all(
        p.get("type") == "step-start" or (p.get("type") == "text" and not p.get("text"))
        for p in msg.parts
    )


def _tool_part(part: dict[str, Any]) -> tuple[str, str] | None:
    """(tool call id, tool name) of a static (``tool-NAME``) or dynamic tool part."""
    kind = part.get("type") or ""
    call_id = part.get("toolCallId")
    if not isinstance(call_id, str) or not call_id:
        return None
    if kind == "dynamic-tool":
        name = part.get("toolName")
        return (call_id, name) if isinstance(name, str) else None
    if kind.startswith("tool-"):
        return call_id, kind.removeprefix("tool-")
    return None


def _seed_events(
    chat: Chat, messages: Iterable[UIMessageIn], parent: str | None
) -> tuple[list[ev.Event], str | None]:
    """Events placing a client's earlier history in a new session, as one chain."""
    batch: list[ev.Event] = []
    for msg in messages:
        if msg.role == "system" or _is_empty_assistant(msg):
            continue
        mid = ev.new_id("msg")
        chat.ids[msg.id] = mid
        if msg.role == "user":
            batch.append(
                ev.event(ev.USER_MESSAGE, message_id=mid, parent_id=parent, parts=_text_parts(msg))
            )
            parent = mid
            continue
        batch.append(ev.event(ev.MESSAGE_START, message_id=mid, role="assistant", parent_id=parent))
        for i, part in enumerate(msg.parts, 1):
            part_id = f"{mid}:{i}"
            kind = part.get("type")
            tool = _tool_part(part)
            if kind in (ev.TEXT, ev.REASONING) and isinstance(part.get("text"), str):
                batch += [
                    ev.event(ev.PART_START, message_id=mid, part_id=part_id, kind=kind),
                    ev.event(ev.PART_END, part_id=part_id, text=part["text"]),
                ]
            elif tool is not None:
                call_id, name = tool
                batch += [
                    ev.event(
                        ev.PART_START, message_id=mid, part_id=part_id, kind=ev.TOOL_CALL,
                        tool_call_id=call_id, tool_name=name,
                    ),
                    ev.event(ev.PART_END, part_id=part_id, value=part.get("input")),
                ]  # fmt: skip
                if part.get("state") == "output-available":
                    batch.append(
                        ev.event(ev.TOOL_RESULT, tool_call_id=call_id, output=part.get("output"))
                    )
                elif part.get("state") == "output-error":
                    batch.append(
                        ev.event(
                            ev.TOOL_RESULT,
                            tool_call_id=call_id,
                            error=str(part.get("errorText") or "tool failed"),
                        )
                    )
        batch.append(ev.event(ev.MESSAGE_END, message_id=mid, status="complete"))
        parent = mid
    return batch, parent


# -- tether events -> UI message chunks ---------------------------------------------


class RunTranslator:
    """Turns one run's session events into UI message stream chunks.

    Fed every event of the session from before the run starts (or from its
    ``run-start``); events of other runs are ignored. ``done`` is set at the
    run's end (or when the run is cancelled before it started).

    Steps: the run opens one; a part that starts after a tool call of the
    current step was answered opens the next (the model is being called
    again). Parts a ``retry`` discards are ended where they stand: the UI
    stream cannot take back what it sent, so the client keeps a failed
    attempt's partial output (the session's fold drops it).
    """

    def __init__(self, run_id: str, session_id: str) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.started = False
        self.done = False
        self._open: dict[str, str] = {}  # part id -> text | reasoning
        self._tools: dict[str, tuple[str, str, bool]] = {}  # part id -> (call id, name, approval)
        self._calls: set[str] = set()
        self._answered_in_step = False
        self._step_open = False
        self._errored = False

    def feed(self, e: ev.Event) -> list[Chunk]:
        if self.done:
            return []
        kind = e.get("type")
        if kind in (ev.TOOL_RESULT, ev.TOOL_APPROVAL):
            return self._tool_input(e) if e.get("tool_call_id") in self._calls else []
        if e.get("run_id") != self.run_id:
            return []
        if kind == ev.MESSAGE_START and not self.started:
            self.started = self._step_open = True
            meta = {"tether": {"sessionId": self.session_id, "runId": self.run_id}}
            return [
                {"type": "start", "messageId": e["message_id"], "messageMetadata": meta},
                {"type": "start-step"},
            ]
        if kind == ev.CANCEL and not self.started:
            # Taken off the queue before it began: there will be no run-start.
            self.done = True
            return [{"type": "start"}, {"type": "abort", "reason": ev.CANCELLED}]
        if not self.started:
            return []
        if kind == ev.PART_START:
            return self._part_start(e)
        if kind == ev.PART_DELTA:
            pkind = self._open.get(e["part_id"])
            if pkind is None or not e.get("delta"):
                return []
            return [{"type": f"{pkind}-delta", "id": e["part_id"], "delta": e["delta"]}]
        if kind == ev.PART_END:
            return self._part_end(e)
        if kind == ev.RETRY:
            discard = set(e.get("discard") or ())
            return self._close(p for p in list(self._open) if p in discard)
        if kind == ev.ERROR:
            self._errored = True
            text = str(e.get("message") or e.get("code") or "the run failed")
            return [*self._close(list(self._open)), {"type": "error", "errorText": text}]
        if kind == ev.RUN_END:
            return self._end(e.get("reason", ev.COMPLETE))
        return []

    def _part_start(self, e: ev.Event) -> list[Chunk]:
        out: list[Chunk] = []
        pkind = e.get("kind")
        if pkind not in (ev.TEXT, ev.REASONING, ev.TOOL_CALL):
            return out
        if self._answered_in_step:
            out += self._close(list(self._open))
            out += [{"type": "finish-step"}, {"type": "start-step"}]
            self._answered_in_step = False
        part_id = e["part_id"]
        if pkind == ev.TOOL_CALL:
            call_id, name = e.get("tool_call_id") or part_id, e.get("tool_name") or "tool"
            self._tools[part_id] = (call_id, name, bool(e.get("needs_approval")))
            self._calls.add(call_id)
            out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
        else:
            self._open[part_id] = pkind
            out.append({"type": f"{pkind}-start", "id": part_id})
        return out

    def _part_end(self, e: ev.Event) -> list[Chunk]:
        part_id = e["part_id"]
        if part_id in self._open:
            return self._close([part_id])
        tool = self._tools.pop(part_id, None)
        if tool is None:
            return []
        call_id, name, approval = tool
        out: list[Chunk] = [
            {
                "type": "tool-input-available",
                "toolCallId": call_id,
                "toolName": name,
                "input": e.get("value"),
            }
        ]
        if approval:
            out.append(
                {"type": "tool-approval-request", "approvalId": call_id, "toolCallId": call_id}
            )
        return out

    def _tool_input(self, e: ev.Event) -> list[Chunk]:
        call_id = e["tool_call_id"]
        if e["type"] == ev.TOOL_APPROVAL:
            if e.get("approved"):
                return []
            self._answered_in_step = True
            return [{"type": "tool-output-denied", "toolCallId": call_id}]
        self._answered_in_step = True
        if e.get("error") is not None:
            return [{"type": "tool-output-error", "toolCallId": call_id, "errorText": e["error"]}]
        return [{"type": "tool-output-available", "toolCallId": call_id, "output": e.get("output")}]

    def _close(self, part_ids: Iterable[str]) -> list[Chunk]:
        return [{"type": f"{self._open.pop(p)}-end", "id": p} for p in part_ids]

    def _end(self, reason: str) -> list[Chunk]:
        self.done = True
        out = self._close(list(self._open))
        out.append({"type": "finish-step"})
        if reason == ev.COMPLETE:
            out.append({"type": "finish", "finishReason": "stop"})
        elif reason == ev.CANCELLED:
            out.append({"type": "abort", "reason": ev.CANCELLED})
        else:
            if not self._errored:
                out.append(
                    {"type": "error", "errorText": f"the run was {reason}: the server stopped"}
                )
            out.append({"type": "finish", "finishReason": "error"})
        return out


def _sse(chunk: Chunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


# -- the router ---------------------------------------------------------------------


class AISDKFront:
    def __init__(
        self,
        sessions: SessionService,
        runtime: Runtime,
        known_models: Callable[[str | None, str | None], str | None],
        stop: Callable[[], asyncio.Future[None]],
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.known_models = known_models
        self.stop = stop
        self._locks = _Locks()
        #: Session id -> position of the latest run-start seen (runs start in order,
        #: so the active run's run-start is at or after it).
        self._hints: OrderedDict[str, int] = OrderedDict()

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
                _text_parts(msg)
        parts: list[dict[str, Any]] = []
        if body.trigger == "submit-message":
            if not messages:
                raise InvalidInput("messages must not be empty")
            parts = _new_user_parts(messages[-1])
        elif not body.messageId and not messages:
            raise InvalidInput("regenerate-message needs a messageId or messages")

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
                    title=_title(messages),
                    metadata={"aisdk_chat_id": body.id},
                )
                chat = Chat(key, body.id, record.id)
            try:
                return await self._place(body, chat, parts, created)
            except BaseException:
                if created:  # a request that fails leaves neither a session nor a chat
                    await self.runtime.forget(chat.session_id)
                    await self.sessions.delete(chat.session_id)
                raise

    async def _place(
        self, body: ChatRequest, chat: Chat, parts: list[dict[str, Any]], created: bool
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
                mid, run_id, _ = await self.runtime.edit(sid, chat.tether_id(last.id), parts)
            else:
                parent = await self._place_history(chat, messages[:-1], known, created)
                mid, run_id, _ = await self.runtime.send(sid, parts, parent_id=parent)
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
        history = [m for m in history if m.role != "system" and not _is_empty_assistant(m)]
        if not history:
            return None
        if created:
            batch, parent = _seed_events(chat, history, None)
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

    def response(self, session_id: str, run_id: str, position: int) -> Response:
        """The run's UI message stream, from ``position`` (before or at its run-start)."""
        frames = UIFrames(
            RunTranslator(run_id, session_id), lambda at: self._remember(session_id, at)
        )
        follow = Follow(self.sessions, session_id, position, frames, stop=self.stop())
        headers = {
            **UI_STREAM_HEADERS,
            "x-tether-session-id": session_id,
            "x-tether-run-id": run_id,
        }
        return EventStreamResponse(follow, headers)


class UIFrames:
    """The relay's translator for the AI SDK: one run's UI message stream, then [DONE]."""

    def __init__(self, run: RunTranslator, run_started: Callable[[int], None]) -> None:
        self.run = run
        #: Told the position of the run's run-start when it goes by.
        self.run_started = run_started

    @property
    def finished(self) -> bool:
        return self.run.done

    def frame(self, position: int, event: bytes) -> bytes:
        e = orjson.loads(event)
        if e.get("type") == ev.RUN_START and e.get("run_id") == self.run.run_id:
            self.run_started(position - 1)
        chunks = self.run.feed(e)
        return b"".join([_sse(c) for c in chunks]) if chunks else b""

    def last(self) -> bytes:
        return DONE


def _title(messages: list[UIMessageIn]) -> str | None:
    for msg in messages:
        if msg.role == "user":
            text = " ".join(p.get("text", "") for p in msg.parts if p.get("type") == "text").strip()
            if text:
                return text if len(text) <= 80 else text[:79] + "…"
    return None


def build_aisdk_router(
    sessions: SessionService,
    runtime: Runtime,
    known_models: Callable[[str | None, str | None], str | None],
    stop: Callable[[], asyncio.Future[None]],
) -> APIRouter:
    """``known_models`` answers ``(model, agent) -> error message or None``."""
    front = AISDKFront(sessions, runtime, known_models, stop)
    router = APIRouter(prefix="/v1/aisdk", tags=["vercel-ai-sdk"], route_class=CheckedJSONRoute)

    @router.post(
        "/chat",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def chat(body: ChatRequest, who: Who) -> Response:
        """useChat's DefaultChatTransport: send or regenerate, answered as a UI message stream."""
        if who.read_only:
            raise Unauthorized("a read token can only read")
        sid, run_id, position = await front.submit(body, who.owner)
        return front.response(sid, run_id, position)

    @router.get(
        "/chat/{chat_id}/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 204: {}},
    )
    async def resume(chat_id: Annotated[str, Path(max_length=200)], who: Who) -> Response:
        """useChat's resume: the active run's stream from its start, or 204 when idle."""
        found = await front.active(chat_id, who)
        if found is None:
            return Response(status_code=204)
        return front.response(*found)

    return router


__all__ = ["ChatRequest", "RunTranslator", "build_aisdk_router", "chat_key"]
