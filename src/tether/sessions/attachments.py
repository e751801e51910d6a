"""Attachments: the image and file parts of user messages, and where their bytes live.

A user message's attachment part, as the ``user-message`` event stores it::

    {"type": "image" | "file", "media_type": "image/png", "name"?: "cat.png",
     "size": <bytes>, "data": <base64>}          -- inline, up to the inline limit
    {"type": ..., "media_type": ..., "name"?: ..., "size": ...,
     "stream": "sessions/<id>/attachments/<att id>"}   -- larger: a stream of its own
    {"type": "image", "url": "https://..."}       -- an image the upstream fetches itself

The fronts parse what clients send into that form (:func:`attachment_part`),
check it against what the session's model takes (:func:`accepts`), and move
what is larger than the inline limit into its own stream
(:class:`AttachmentStreams`). Attachment streams live under the session's
name, where the raw stream protocol serves nothing (a session name holds no
``/``): their bytes are read only through the session API, by whoever may
read the session.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterable
from typing import Any, Final

from tether.sessions.events import new_id
from tether.sessions.service import stream_name
from tether.store.base import CreateRequest, Store
from tether.store.errors import StreamNotFound

IMAGE: Final = "image"
FILE: Final = "file"
KINDS: Final = (IMAGE, FILE)
#: Attachments up to this many bytes stay in their event by default.
DEFAULT_INLINE_MAX = 64 * 1024
#: The longest file name kept.
MAX_NAME = 255
#: Bytes per read of an attachment stream.
_READ_CHUNK = 1024 * 1024

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*),", re.ASCII)


class BadAttachment(ValueError):
    """An attachment part that is not one (the message says which field and why)."""


def is_attachment(part: dict[str, Any]) -> bool:
    return part.get("type") in KINDS


def split_data_url(url: str) -> tuple[str, str]:
    """``(media type, base64 data)`` of a ``data:<type>;base64,<data>`` URL."""
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group(2).lower():
        raise BadAttachment("a data URL must be data:<media type>;base64,<data>")
    return match.group(1).strip().lower(), url[match.end() :]


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def attachment_part(
    kind: str,
    *,
    media_type: str | None = None,
    data: str | None = None,
    url: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """An attachment part in its stored form, from what a client sent.

    ``data`` is base64 or a ``data:`` URL (which then gives the media type);
    ``url`` an http(s) URL, for images only. BadAttachment if it is not valid.
    """
    if kind not in KINDS:
        raise BadAttachment(f"an attachment's type is 'image' or 'file', not {kind!r}")
    if (data is None) == (url is None):
        raise BadAttachment("an attachment needs 'data' (base64 or a data URL) or 'url', not both")
    if url is not None:
        if url.startswith("data:"):
            data = url
        else:
            return _url_part(kind, url, media_type, name)
    assert data is not None
    if data.startswith("data:"):
        media_type, data = split_data_url(data)
    media_type = (media_type or "").strip().lower()
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise BadAttachment("an attachment needs a media type (e.g. image/png)")
    if kind == IMAGE and not media_type.startswith("image/"):
        raise BadAttachment(f"an image must have an image/* media type, not {media_type}")
    try:
        size = len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise BadAttachment("an attachment's data is not valid base64") from None
    if size == 0:
        raise BadAttachment("an attachment must not be empty")
    part: dict[str, Any] = {"type": kind, "media_type": media_type}
    if name:
        part["name"] = _name(name)
    part["size"] = size
    part["data"] = data
    return part


def _url_part(kind: str, url: str, media_type: str | None, name: str | None) -> dict[str, Any]:
    if kind != IMAGE:
        raise BadAttachment("only images may be given by URL; send a file's data")
    if not re.match(r"https?://[^/\s]+", url) or len(url) > 8192 or any(c.isspace() for c in url):
        raise BadAttachment("an attachment's url must be an http(s) URL or a data URL")
    part: dict[str, Any] = {"type": kind, "url": url}
    if media_type:
        part["media_type"] = media_type.strip().lower()
    if name:
        part["name"] = _name(name)
    return part


def _name(name: str) -> str:
    """A file name as shown and sent on: no path, no control characters, bounded."""
    base = re.split(r"[/\\]", name)[-1]
    return "".join(c for c in base if c.isprintable())[:MAX_NAME] or "file"


def accepts(patterns: Iterable[str], part: dict[str, Any]) -> bool:
    """Whether a model taking ``patterns`` (``image/png``, ``image/*``, ``*/*``) takes ``part``.

    An image by URL is taken by a model that takes images.
    """
    if "url" in part:  # an image of a type only its server knows: any image type will do
        return any(p == "*/*" or p.startswith("image/") for p in patterns)
    media_type = part.get("media_type", "")
    major = media_type.split("/", 1)[0]
    return any(p in ("*/*", media_type) or p == f"{major}/*" for p in patterns)


def refusal(model: str, patterns: Iterable[str], parts: Iterable[dict[str, Any]]) -> str | None:
    """Why ``model`` cannot be sent these parts (None if it can)."""
    patterns = tuple(patterns)
    for part in parts:
        if is_attachment(part) and not accepts(patterns, part):
            what = part.get("media_type") or "image"
            takes = ", ".join(patterns) if patterns else "no attachments"
            return f"the model {model} cannot take {what} attachments (it takes: {takes})"
    return None


def attachment_stream(session_id: str) -> str:
    """A new attachment stream's name, under the session's."""
    return f"{stream_name(session_id)}/attachments/{new_id('att')}"


class AttachmentStreams:
    """Attachment bytes in streams of their own: written once, read whole."""

    def __init__(self, store: Store, inline_max: int = DEFAULT_INLINE_MAX) -> None:
        self.store = store
        #: Attachments larger than this many bytes go to a stream of their own.
        self.inline_max = inline_max

    async def moved_out(
        self, session_id: str, parts: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """``parts`` with every attachment over the inline limit in a stream of its own.

        Returns the parts and the streams written (to delete if the message is
        not placed after all).
        """
        out: list[dict[str, Any]] = []
        written: list[str] = []
        for part in parts:
            if is_attachment(part) and "data" in part and part["size"] > self.inline_max:
                name = attachment_stream(session_id)
                raw = base64.b64decode(part["data"])
                await self.store.create(name, CreateRequest(part["media_type"], messages=[raw]))
                written.append(name)
                part = {k: v for k, v in part.items() if k != "data"}
                part["stream"] = name
            out.append(part)
        return out, written

    async def read(self, name: str) -> bytes:
        """The bytes of attachment stream ``name`` (StreamNotFound if it is gone)."""
        out = bytearray()
        position: int | None = 0
        while True:
            res = await self.store.read(name, position, _READ_CHUNK)
            for chunk in res.chunks:
                out += chunk
            position = res.next
            if res.up_to_date:
                return bytes(out)

    async def data(self, part: dict[str, Any]) -> bytes:
        """An attachment part's bytes, wherever they are."""
        if "data" in part:
            return base64.b64decode(part["data"])
        if "stream" in part:
            return await self.read(part["stream"])
        raise StreamNotFound(str(part.get("url") or "attachment"))

    async def delete(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(StreamNotFound):
                await self.store.delete(name)
