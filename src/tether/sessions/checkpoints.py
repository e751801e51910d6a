"""Checkpoints of session folds: a cold snapshot folds only the events after the last one.

A checkpoint is a record (namespace ``session-folds``, keyed by session id) on
whatever store holds the session: its fold as :meth:`SessionFold.dump` gives
it, the stream position that fold is complete up to, and what makes it safe
to use. It is only ever a shortcut, never a second truth, so one is ignored
(and written again) unless all of these hold:

- it was written in this fold's format: ``FORMAT`` is a digest of the fold's
  code and this module's, so any change to either makes older checkpoints stale;
- it was folded from this very stream: a session's stream deleted and created
  again under the same name (or a store restored beside other data) has
  another identity (the store's stream id and creation time);
- the stream reaches its position: a checkpoint is written only for a
  position the fold reached, so a stream shorter than that is not its stream.

Checkpoints are written off the append path: an append notes how far its
session's stream has grown (:meth:`Checkpointer.grew`, no await), and once it
is ``every`` events past the last checkpoint a background task catches the
fold up and stores it. An append never waits for that write, and a session
has at most one such write under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from tether.sessions import fold as fold_module
from tether.sessions.fold import SessionFold
from tether.store.base import Store, StreamMeta
from tether.store.errors import StreamNotFound

log = logging.getLogger(__name__)

NAMESPACE: Final = "session-folds"
#: The fold's format: a digest of the code that folds and of the code that dumps and loads.
FORMAT: Final = hashlib.sha256(
    Path(fold_module.__file__).read_bytes() + Path(__file__).read_bytes()
).hexdigest()[:16]
#: Events between two checkpoints of a session, by default: a cold snapshot folds at most
#: these after its checkpoint (about 2 to 5 ms of folding on a quiet machine).
DEFAULT_EVERY: Final = 1000

#: A stream's identity: its store id and creation time (a name can be reused, these not).
StreamIdentity = tuple[int, float]


def identity(meta: StreamMeta) -> StreamIdentity:
    return (meta.id, meta.created_at)


class Folded(Protocol):
    """A fold and how far it got (the session service's cached state)."""

    fold: SessionFold
    position: int
    folded_bytes: int
    stream: StreamIdentity
    #: Position of its last checkpoint written or read (0: none).
    checkpointed: int


@dataclass(slots=True)
class Checkpoint:
    fold: SessionFold
    #: Stream position the fold is complete up to.
    position: int
    #: Bytes of the events folded into it (what the fold cache's size estimate goes by).
    folded_bytes: int


def encode(state: Folded) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "stream": list(state.stream),
            "position": state.position,
            "folded_bytes": state.folded_bytes,
            "fold": state.fold.dump(),
        }
    )


def decode(raw: bytes, meta: StreamMeta) -> Checkpoint | None:
    """The checkpoint in ``raw`` if it holds for the stream ``meta`` describes (else None)."""
    try:
        data: dict[str, Any] = orjson.loads(raw)
        if (
            data.get("format") != FORMAT
            or tuple(data["stream"]) != identity(meta)
            or not 0 <= data["position"] <= meta.tail
        ):
            return None
        return Checkpoint(SessionFold.load(data["fold"]), data["position"], data["folded_bytes"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # not one this code wrote: fold from the start instead


class Checkpointer:
    """Writes sessions' checkpoints in the background as their streams grow."""

    def __init__(
        self, store: Store, catch_up: Callable[[str], Awaitable[Folded]], every: int
    ) -> None:
        """``catch_up``: the session's fold, caught up with its stream (and cached)."""
        self.store = store
        self.every = every
        self._catch_up = catch_up
        self._writing: dict[str, asyncio.Task[None]] = {}

    async def read(self, session_id: str, meta: StreamMeta) -> Checkpoint | None:
        raw = await self.store.get_record(NAMESPACE, session_id)
        return None if raw is None else decode(raw, meta)

    def grew(self, session_id: str, state: Folded | None, position: int) -> None:
        """The session's stream reached ``position``: checkpoint it in the background if
        it is ``every`` events past the checkpoint of its fold ``state`` (None: its fold is
        not in memory, so that is not known). Never waits for anything."""
        if state is not None and position - state.checkpointed < self.every:
            return
        if session_id not in self._writing:
            task = asyncio.create_task(self._write(session_id))
            self._writing[session_id] = task
            task.add_done_callback(lambda _: self._writing.pop(session_id, None))

    async def _write(self, session_id: str) -> None:
        """Checkpoint the session until its stream stops outgrowing its last checkpoint
        (appends that came during a write start no write of their own)."""
        try:
            while True:
                state = await self._catch_up(session_id)
                # No await between the catch-up and the encoding: the fold is at position.
                if state.position - state.checkpointed < self.every:
                    return  # the checkpoint it was restored from, or the last written
                position, raw = state.position, encode(state)
                await self.store.put_record(NAMESPACE, session_id, raw)
                state.checkpointed = max(state.checkpointed, position)
        except asyncio.CancelledError:
            raise
        except (LookupError, StreamNotFound):
            pass  # deleted meanwhile: nothing to checkpoint
        except Exception:
            log.warning("could not checkpoint session %s", session_id, exc_info=True)

    async def forget(self, session_id: str) -> None:
        """Drop the session's checkpoint, and any write of one under way (it is deleted)."""
        task = self._writing.get(session_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.delete_record(NAMESPACE, session_id)

    async def aclose(self) -> None:
        """Let the writes under way finish (each one fold's encoding and one record write)."""
        await asyncio.gather(*self._writing.values(), return_exceptions=True)
