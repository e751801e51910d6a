"""The AI SDK's request, and its UI messages in tether's terms: pure, no I/O.

``ChatRequest`` is the body ``DefaultChatTransport`` sends; the functions here
check a UI message's parts, and turn a client's earlier history into the events
that place it in a new session (:func:`seed_events`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tether.agents.tools import MAX_TOOLS
from tether.api.aisdk.chats import Chat
from tether.api.sessions import MAX_TEXT
from tether.runtime.runner import InvalidInput
from tether.sessions import events as ev
from tether.sessions.attachments import FILE, IMAGE, BadAttachment, attachment_part, is_attachment

MAX_MESSAGES = 10_000


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
    #: Tools for the run this request starts: tether's declarations (server
    #: tools' names, client tools' definitions), or the AI SDK's record of
    #: tools by name, ``{name: {description?, inputSchema | parameters}}``.
    tools: list[Any] | dict[str, Any] | None = Field(default=None, max_length=MAX_TOOLS)


def tool_declarations(tools: list[Any] | dict[str, Any]) -> list[Any]:
    """A request's ``tools`` as tether's declarations (the record form converted)."""
    if isinstance(tools, list):
        return tools
    out: list[Any] = []
    for name, spec in tools.items():
        if not isinstance(spec, dict):
            raise InvalidInput(f"tools.{name}: a tool is an object")
        schema = spec.get("inputSchema", spec.get("parameters", {"type": "object"}))
        if isinstance(schema, dict) and isinstance(schema.get("jsonSchema"), dict):
            schema = schema["jsonSchema"]  # the AI SDK's jsonSchema() helper, serialized
        declared: dict[str, Any] = {"name": name, "parameters": schema}
        if "description" in spec:
            declared["description"] = spec["description"]
        out.append(declared)
    return out


def file_part(msg: UIMessageIn, part: dict[str, Any]) -> dict[str, Any]:
    """A ``file`` UI part (``mediaType``, ``url``: a data URL, ``filename``?) as an attachment.

    An image may also be an http(s) URL, which the upstream fetches.
    """
    media_type, url, name = part.get("mediaType"), part.get("url"), part.get("filename")
    if not isinstance(media_type, str) or not isinstance(url, str):
        raise InvalidInput(f"message {msg.id}: a file part needs a mediaType and a url")
    kind = IMAGE if media_type.lower().startswith("image/") else FILE
    try:
        return attachment_part(
            kind, media_type=media_type, url=url, name=name if isinstance(name, str) else None
        )
    except BadAttachment as err:
        raise InvalidInput(f"message {msg.id}: {err}") from None


def text_parts(msg: UIMessageIn) -> list[dict[str, Any]]:
    """A user message's text and file parts, in tether's form; other kinds are ignored."""
    out: list[dict[str, Any]] = []
    for part in msg.parts:
        kind = part.get("type")
        if kind == "file":
            out.append(file_part(msg, part))
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidInput(f"message {msg.id}: a text part needs a string text")
            if len(text) > MAX_TEXT:
                raise InvalidInput(f"message {msg.id}: text longer than {MAX_TEXT} characters")
            out.append({"type": "text", "text": text})
    return out


def new_user_parts(msg: UIMessageIn) -> list[dict[str, Any]]:
    if msg.role != "user":
        raise InvalidInput(
            "the last message of a submit-message must be a user message (tether answers "
            "tool calls through POST /v1/sessions/{sessionId}/tool-results)"
        )
    parts = text_parts(msg)
    if not any(is_attachment(p) or p["text"].strip() for p in parts):
        raise InvalidInput("message content must not be empty")
    return parts


def is_empty_assistant(msg: UIMessageIn) -> bool:
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


def seed_events(
    chat: Chat, messages: Iterable[UIMessageIn], parent: str | None
) -> tuple[list[ev.Event], str | None]:
    """Events placing a client's earlier history in a new session, as one chain."""
    batch: list[ev.Event] = []
    for msg in messages:
        if msg.role == "system" or is_empty_assistant(msg):
            continue
        mid = ev.new_id("msg")
        chat.ids[msg.id] = mid
        if msg.role == "user":
            batch.append(
                ev.event(ev.USER_MESSAGE, message_id=mid, parent_id=parent, parts=text_parts(msg))
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


def title_of(messages: list[UIMessageIn]) -> str | None:
    for msg in messages:
        if msg.role == "user":
            text = " ".join(p.get("text", "") for p in msg.parts if p.get("type") == "text").strip()
            if text:
                return text if len(text) <= 80 else text[:79] + "…"
    return None
