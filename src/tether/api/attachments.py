"""What the fronts do with attachments: admit them for a session's model, store, serve.

Every front (the native API, the AI SDK route, the gateway) parses its own
part forms into the stored form of :mod:`tether.sessions.attachments`, then
hands the parts here before the message is placed: a model that cannot take
one of them refuses the whole message (415, nothing written), and what is
larger than the inline limit is moved into a stream of its own. The native API
serves them back, to whoever may read the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi.responses import Response

from tether.sessions.attachments import AttachmentStreams, is_attachment, refusal
from tether.sessions.events import USER_MESSAGE, Event
from tether.sessions.service import SessionService
from tether.store.errors import StreamNotFound
from tether.streams.http_errors import HTTPError

#: ``(model, agent) -> the media types its attachments may have``; None: any (an agent's).
MediaTypes = Callable[[str | None, str | None], tuple[str, ...] | None]

#: Images a browser may show in place: every other attachment is served as a download.
_SHOWN = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def unsupported(message: str) -> HTTPError:
    return HTTPError(415, "unsupported_attachment", message)


class Attachments:
    """The attachments of the messages the fronts place (one per app)."""

    def __init__(
        self, streams: AttachmentStreams, sessions: SessionService, media_types: MediaTypes
    ) -> None:
        self.streams = streams
        self.sessions = sessions
        self.media_types = media_types

    def refusal(
        self, model: str | None, agent: str | None, parts: list[dict[str, Any]]
    ) -> str | None:
        """Why the session's model cannot be sent ``parts`` (None if it can)."""
        if not any(is_attachment(p) for p in parts):
            return None
        patterns = self.media_types(model, agent)
        if patterns is None:
            return None
        return refusal(model or "demo", patterns, parts)

    async def admit(
        self, session_id: str, parts: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """``parts`` ready to be placed in the session, and the streams written for them.

        Raises 415 (writing nothing) if the session's model cannot take one of
        them. Whoever then fails to place the message deletes the streams
        (:meth:`drop`). Parts without attachments cost nothing.
        """
        if not any(is_attachment(p) for p in parts):
            return parts, []
        record = await self.sessions.record(session_id)
        problem = self.refusal(record.model, record.agent, parts)
        if problem:
            raise unsupported(problem)
        return await self.streams.moved_out(session_id, parts)

    async def admit_events(
        self, session_id: str, events: list[Event]
    ) -> tuple[list[Event], list[str]]:
        """:meth:`admit` for the parts of every ``user-message`` in ``events`` (a history)."""
        out: list[Event] = []
        written: list[str] = []
        try:
            for e in events:
                if e.get("type") == USER_MESSAGE:
                    parts, more = await self.admit(session_id, e.get("parts", []))
                    written += more
                    e = {**e, "parts": parts}
                out.append(e)
        except BaseException:
            await self.drop(written)
            raise
        return out, written

    async def drop(self, written: list[str]) -> None:
        await self.streams.delete(written)

    async def forget(self, session_id: str) -> None:
        """Delete the attachment streams of a session about to be deleted."""
        fold = (await self.sessions.state(session_id)).fold
        names = [
            p.attachment["stream"]
            for m in fold.messages.values()
            for p in m.parts
            if p.attachment is not None and "stream" in p.attachment
        ]
        await self.streams.delete(names)

    async def response(self, session_id: str, part_id: str) -> Response:
        """The bytes of the attachment ``part_id`` (``<message id>:<index>``) of a session."""
        fold = (await self.sessions.state(session_id)).fold
        message_id, _, index = part_id.rpartition(":")
        msg = fold.messages.get(message_id)
        part = None
        if msg is not None and index.isdigit() and int(index) < len(msg.parts):
            part = msg.parts[int(index)].attachment
        if part is None or "url" in part:
            raise _no_attachment(part_id)
        try:
            data = await self.streams.data(part)
        except StreamNotFound:
            raise _no_attachment(part_id) from None
        media_type = part.get("media_type") or "application/octet-stream"
        name = part.get("name") or "attachment"
        disposition = "inline" if media_type in _SHOWN else "attachment"
        return Response(
            data,
            media_type=media_type,
            headers={
                "content-disposition": f"{disposition}; filename*=UTF-8''{_quoted(name)}",
                # Bytes a client sent: never run as a page of this origin.
                "content-security-policy": "default-src 'none'; sandbox",
                "x-content-type-options": "nosniff",
                # A part never changes.
                "cache-control": "private, max-age=31536000, immutable",
            },
        )


def _no_attachment(part_id: str) -> HTTPError:
    return HTTPError(404, "not_found", f"no stored attachment {part_id} in this session")


def _quoted(name: str) -> str:
    return quote(name, safe="")
