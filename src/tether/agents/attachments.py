"""A user message's attachments on their way to a provider.

:func:`chat_attachments` turns the stored parts of a message into the
providers' :class:`~tether.providers.base.Attachment`; those stored in a
stream of their own are read by :class:`AttachmentReading`, a provider in
front of another that fills them in before the request is built. Requests
with nothing to read go straight to the provider underneath, as they are.
:func:`reading_attachments` gives every model of a resolver that front, so
an agent's models see the same attachments wherever it runs: in the server
(which reads the store), in a tether worker or a webhook handler (which read
them through the worker API, for the sessions they hold only).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

from tether.providers.base import Attachment, ChatMessage, ItemStream, ModelRequest, Provider
from tether.sessions.fold import Message

#: Reads an attachment stream's bytes.
ReadStream = Callable[[str], Awaitable[bytes]]
#: A model's name -> its provider and its name at that provider.
Resolve = Callable[[str], tuple[Provider, str]]


def chat_attachments(msg: Message) -> list[Attachment]:
    """The images and files of a user message, in order."""
    out: list[Attachment] = []
    for part in msg.parts:
        a = part.attachment
        if a is not None:
            out.append(
                Attachment(
                    kind=part.kind,
                    media_type=a.get("media_type", ""),
                    data=a.get("data", ""),
                    url=a.get("url"),
                    name=a.get("name"),
                    stream=a.get("stream"),
                )
            )
    return out


def _unread(request: ModelRequest) -> bool:
    return any(a.stream and not a.data for m in request.messages for a in m.attachments)


class AttachmentReading:
    """``provider``, with the attachments stored in streams read before each request."""

    def __init__(self, provider: Provider, read: ReadStream) -> None:
        self.provider = provider
        self.name = provider.name
        self._read = read

    def models(self) -> list[str]:
        return self.provider.models()

    def stream(self, request: ModelRequest) -> ItemStream:
        if not _unread(request):
            return self.provider.stream(request)
        return self._stream(request)

    async def _stream(self, request: ModelRequest) -> ItemStream:
        messages: list[ChatMessage] = []
        for m in request.messages:
            if any(a.stream and not a.data for a in m.attachments):
                attachments = [await self._filled(a) for a in m.attachments]
                m = dataclasses.replace(m, attachments=attachments)
            messages.append(m)
        inner = self.provider.stream(dataclasses.replace(request, messages=messages))
        async with contextlib.aclosing(inner) as items:
            async for item in items:
                yield item

    async def _filled(self, a: Attachment) -> Attachment:
        if not a.stream or a.data:
            return a
        data = base64.b64encode(await self._read(a.stream)).decode()
        return dataclasses.replace(a, data=data)

    async def aclose(self) -> None:
        await self.provider.aclose()


def reading_attachments(resolve: Resolve, read: ReadStream) -> Resolve:
    """``resolve``, with each provider it gives behind an :class:`AttachmentReading` of ``read``."""

    def resolved(name: str) -> tuple[Provider, str]:
        provider, model = resolve(name)
        return AttachmentReading(provider, read), model

    return resolved
