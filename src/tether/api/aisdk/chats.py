"""Chats: the AI SDK's chat ids, each mapped to one tether session.

The mapping (and, for user messages, client message id -> tether message id)
is a record beside the sessions, keyed by caller and chat id, so two callers
never share a chat; one lock per chat serialises the requests of a chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from tether.runtime.runner import Conflict

#: Namespace of the records beside the sessions: one record per (caller, chat id).
CHATS = "aisdk-chats"


class HistoryMismatch(Conflict):
    """The client's history has messages the chat's session does not."""


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


class ChatLocks:
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
