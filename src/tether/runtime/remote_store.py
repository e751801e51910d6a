"""A worker's store: the server's store, reached through the worker API over HTTP.

A tether worker runs the runtime's own drivers (tether.runtime.driver) over
this store, so a worker drives a session exactly as a replica on Redis does:
it takes the session's lease, appends fenced by it, follows the stream for
cancels, tool results and approvals, and renews the lease while it works. The
server checks each call against the worker's key (tether.api.workers).

Following a stream (tether.streams.tail) needs a notifier: while anyone here
follows a stream, one task long-polls the server for it and publishes what
arrives, so a cancel posted to the server reaches the run here at once.

The attachments a run's user messages keep in streams of their own are read
whole (:meth:`RemoteStore.read_attachment`), for its models' requests.

What a worker may not do (create or delete streams, list records or indexes)
the server refuses; those methods raise :class:`NotOffered` without asking.

Round trips: taking a session's lease is one ``take``, whose answer also holds
what the driver reads next (the session's record, its fold's checkpoint, its
stream's head and first events). Those answers are kept as :class:`Primed`
and given to the calls that ask for them, once each, shortly after: each is
what that call would have answered at the take, so a caller cannot tell it
from a slower network. An append of ours to the stream forgets them (a call
would see it), and so does letting the lease go.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Final

import httpx
import orjson

from tether.sessions import checkpoints
from tether.sessions.checkpoints import Checkpointer, Folded
from tether.sessions.service import RECORDS, SessionService
from tether.store.base import (
    AppendRequest,
    AppendResult,
    CreateRequest,
    CreateResult,
    ReadResult,
    Store,
    StreamMeta,
)
from tether.store.errors import BackendUnavailable, LeaseLost, StreamNotFound
from tether.store.notify import TailNotifier

log = logging.getLogger(__name__)

#: Seconds the server may hold a follower's read open before answering "nothing new".
FOLLOW_WAIT = 10.0
#: Seconds before a follower whose read failed asks again.
RETRY_DELAY = 0.5
#: Seconds one call may take (a follower's read waits FOLLOW_WAIT on top).
CALL_TIMEOUT = 30.0
#: Most appends one request carries (tether.api.workers.MAX_BATCH).
MAX_BATCH = 256
#: Streams whose last known tail a follower may start from.
KNOWN_TAILS = 4096
#: Seconds a take's answers are given to the calls that ask for them, at most.
PRIMED_FOR = 2.0
_SESSION_LEASE = "session:"
_SESSIONS = "sessions/"
#: What :meth:`Primed.pop` answers for a call that nothing was kept for.
MISSING: Final = object()


class NotOffered(NotImplementedError):
    """An operation the worker API does not offer a worker."""


class WorkerRefused(Exception):
    """The server refused a worker's call (its status and message; never the key)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Primed:
    """Answers given ahead of the calls that ask for them: each one once, soon, and
    only while nothing of ours has changed what it answers (see the module docstring)."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, Hashable], tuple[float, list[Any]]] = {}

    def put(self, path: str, key: Hashable, *answers: Any) -> None:
        """Keep ``answers`` of the calls ``key`` names about stream ``path``, in order."""
        self._answers[(path, key)] = (time.monotonic() + PRIMED_FOR, list(answers))

    def pop(self, path: str, key: Hashable) -> Any:
        """The next answer kept for ``key`` about ``path``, or :data:`MISSING`."""
        entry = self._answers.get((path, key))
        if entry is None:
            return MISSING
        until, answers = entry
        if time.monotonic() > until:
            del self._answers[(path, key)]
            return MISSING
        answer = answers.pop(0)
        if not answers:
            del self._answers[(path, key)]
        return answer

    def forget(self, path: str) -> None:
        """Drop every answer about stream ``path`` (it changed, or is no longer ours)."""
        for kept in [k for k in self._answers if k[0] == path]:
            del self._answers[kept]


class RemoteStore(Store):
    """The :class:`Store` a tether worker uses: each call is one worker API request."""

    exclusive = False

    def __init__(self, server: str, key: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=server.rstrip("/"),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
            timeout=httpx.Timeout(CALL_TIMEOUT + FOLLOW_WAIT),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self.notifier: RemoteNotifier = RemoteNotifier(self)
        #: Appends waiting for the request under way to end: they go in the next one.
        self._appends: list[tuple[str, AppendRequest, asyncio.Future[AppendResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.primed = Primed()

    async def open(self) -> None:
        self.notifier.loop = asyncio.get_running_loop()

    async def aclose(self) -> None:
        await self.notifier.aclose()
        await self._client.aclose()

    async def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """One worker API call; its answer, or the refusal as an exception."""
        log.debug("worker API call: %s", op)  # the operation alone: a body may hold a token
        try:
            res = await self._client.post(f"/v1/worker/{op}", content=orjson.dumps(body))
        except httpx.HTTPError as err:
            what = type(err).__name__
            raise BackendUnavailable(f"the tether server is unreachable ({what})") from None
        if res.status_code == 200:
            answer: dict[str, Any] = orjson.loads(res.content)
            return answer
        try:
            error = orjson.loads(res.content)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            error = {"code": "", "message": res.reason_phrase}
        raise _refusal(res.status_code, error, body)

    # -- streams -------------------------------------------------------------------

    async def create(self, path: str, req: CreateRequest) -> CreateResult:
        raise NotOffered("a worker does not create streams")

    async def delete(self, path: str) -> None:
        raise NotOffered("a worker does not delete streams")

    async def append(self, path: str, req: AppendRequest) -> AppendResult:
        """Appends made while a request of them is under way go together in the next one:
        one request per round trip, not per append (a token each, in many sessions). The
        server applies them in order per stream, each fenced by its own lease."""
        if req.lease is None:
            raise NotOffered("a worker appends only as a session's lease holder")
        self.primed.forget(path)
        done: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._appends.append((path, req, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._send_appends(), name="tether-appends")
        return await done

    async def _send_appends(self) -> None:
        """Send the waiting appends, a request at a time, until none wait."""
        try:
            while self._appends:
                batch, self._appends = self._appends[:MAX_BATCH], self._appends[MAX_BATCH:]
                items = [_append_body(path, req) for path, req, _ in batch]
                try:
                    results = (await self.call("append_batch", {"appends": items}))["results"]
                except Exception as err:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(err)
                    continue
                for (path, req, done), item, result in zip(batch, items, results, strict=True):
                    if done.done():
                        continue  # its caller was cancelled: the append stands or not, as sent
                    if "error" in result:
                        done.set_exception(
                            _refusal(result["error"]["status"], result["error"], item)
                        )
                    else:
                        done.set_result(AppendResult(result["tail"], result["closed"]))
                        self.notifier.appended(path, req.messages, result["tail"], result["closed"])
        finally:
            self._flusher = None

    async def read(self, path: str, offset: int | None, max_bytes: int) -> ReadResult:
        primed = self.primed.pop(path, ("read", offset))
        if primed is not MISSING:
            return primed
        return await self.wait_read(path, offset, max_bytes, 0.0)

    async def wait_read(
        self, path: str, offset: int | None, max_bytes: int, wait: float
    ) -> ReadResult:
        """A read that, with nothing after ``offset`` yet, waits up to ``wait`` seconds."""
        answer = await self.call(
            "read", {"path": path, "offset": offset, "max_bytes": max_bytes, "wait": wait}
        )
        res = read_result(answer)
        self.notifier.saw(path, res.meta.tail)
        return res

    async def read_attachment(self, path: str) -> bytes:
        """The bytes of attachment stream ``path`` of a session this worker holds
        (StreamNotFound for any other): what a run's model is sent."""
        return base64.b64decode((await self.call("attachment", {"path": path}))["data"])

    async def head(self, path: str) -> StreamMeta:
        primed = self.primed.pop(path, "head")
        if primed is not MISSING:
            return primed
        meta = _meta((await self.call("head", {"path": path}))["meta"])
        self.notifier.saw(path, meta.tail)
        return meta

    async def list_paths(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        raise NotOffered("a worker does not list streams")

    # -- records -------------------------------------------------------------------

    async def put_record(self, namespace: str, key: str, value: bytes) -> None:
        body = {"namespace": namespace, "key": key, "value": base64.b64encode(value).decode()}
        await self.call("record_put", body)

    async def get_record(self, namespace: str, key: str) -> bytes | None:
        primed = self.primed.pop(_SESSIONS + key, ("record", namespace))
        if primed is not MISSING:
            return primed
        try:
            answer = await self.call("record_get", {"namespace": namespace, "key": key})
        except WorkerRefused as err:
            if err.status == 404:
                return None  # not this worker's to read: as if it did not exist
            raise
        value = answer["value"]
        return None if value is None else base64.b64decode(value)

    async def list_records(self, namespace: str) -> list[tuple[str, bytes]]:
        raise NotOffered("a worker does not list records")

    async def delete_record(self, namespace: str, key: str) -> None:
        await self.call("record_delete", {"namespace": namespace, "key": key})

    # -- indexes -------------------------------------------------------------------

    async def index_put(self, name: str, member: str, key: str) -> None:
        await self.call("index_put", {"name": name, "member": member, "key": key})

    async def index_remove(self, name: str, member: str) -> None:
        await self.call("index_remove", {"name": name, "member": member})

    async def index_page(self, name: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        raise NotOffered("a worker does not read indexes")

    async def index_count(self, name: str) -> int:
        raise NotOffered("a worker does not read indexes")

    # -- leases --------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """A session's lease is a ``take``: what the driver reads next comes with it."""
        op = "take" if name.startswith(_SESSION_LEASE) else "lease_acquire"
        try:
            answer = await self.call(op, {"name": name, "owner": owner, "ttl": ttl})
        except WorkerRefused as err:
            if err.status == 404:
                return False  # not a session of a worker-served agent (or gone)
            raise
        if answer["acquired"] and op == "take":
            self._prime(_SESSIONS + name[len(_SESSION_LEASE) :], answer)
        return bool(answer["acquired"])

    def _prime(self, path: str, answer: dict[str, Any]) -> None:
        """Keep a take's answers for the calls a driver makes next, in the order it does:
        the record, the head (as its fold restores, then catches up), the checkpoint,
        the first read."""
        primed = self.primed
        primed.forget(path)
        for namespace in (RECORDS, checkpoints.NAMESPACE):
            raw = answer["record" if namespace == RECORDS else "checkpoint"]
            primed.put(path, ("record", namespace), None if raw is None else base64.b64decode(raw))
        head = answer["head"]
        primed.put(path, "head", _meta(dict(head)), _meta(dict(head)))
        self.notifier.saw(path, int(head["tail"]))
        if answer.get("read") is not None:
            primed.put(path, ("read", 0), read_result(answer["read"]))

    async def renew_leases(self, names: list[str], owner: str, ttl: float) -> list[str]:
        if not names:
            return []
        answer = await self.call("lease_renew", {"names": names, "owner": owner, "ttl": ttl})
        return list(answer["lost"])

    async def release_lease(self, name: str, owner: str) -> None:
        if name.startswith(_SESSION_LEASE):
            self.primed.forget(_SESSIONS + name[len(_SESSION_LEASE) :])
        await self.call("lease_release", {"name": name, "owner": owner})

    async def lease_holder(self, name: str) -> str | None:
        raise NotOffered("a worker does not look at others' leases")


class RemoteSessions(SessionService):
    """A worker's session service: what a run notes on its session's record (status,
    usage) is written by the server, which files the session in its owner's lists."""

    store: RemoteStore

    def __init__(self, store: RemoteStore) -> None:
        super().__init__(store)
        self.checkpoints = ReadOnlyCheckpoints(store, self.state, self.checkpoints.every)

    async def note_run(
        self,
        session_id: str,
        status: str,
        *,
        usage: Mapping[str, int] | None = None,
        touch: bool = False,
    ) -> None:
        body = {"session": session_id, "status": status, "usage": dict(usage or {}), "touch": touch}
        await self.store.call("note_run", body)


class ReadOnlyCheckpoints(Checkpointer):
    """A worker starts a cold fold from the checkpoint the server wrote for the session it
    holds, and writes none: the server sees every append and checkpoints the fold itself."""

    def grew(self, session_id: str, state: Folded | None, position: int) -> None:
        return


def _append_body(path: str, req: AppendRequest) -> dict[str, Any]:
    return {
        "path": path,
        "messages": [base64.b64encode(m).decode() for m in req.messages],
        "content_type": req.content_type,
        "lease": list(req.lease or ()),
    }


def _refusal(status: int, error: dict[str, Any], body: dict[str, Any]) -> Exception:
    """The exception a store raises for what the server refused (``error`` its body)."""
    if error.get("code") == "lease_lost":
        return LeaseLost(str(body.get("path")))
    if status == 404 and "path" in body:
        return StreamNotFound(str(body["path"]))
    return WorkerRefused(status, str(error.get("message")))


def read_result(answer: dict[str, Any]) -> ReadResult:
    """The :class:`ReadResult` of a worker API read's answer."""
    return ReadResult(
        _meta(answer["meta"]),
        answer["start"],
        [base64.b64decode(c) for c in answer["chunks"]],
        answer["next"],
        answer["up_to_date"],
        answer["closed"],
    )


def _meta(raw: dict[str, Any]) -> StreamMeta:
    closed_by = raw.get("closed_by")
    raw["closed_by"] = tuple(closed_by) if closed_by is not None else None
    return StreamMeta(**raw)


class RemoteNotifier(TailNotifier):
    """Publishes what the server appends to the streams followed here.

    One task per followed stream long-polls the server from where it last
    read and publishes each batch; a reader whose position differs re-reads
    from the store, as on any store (tether.streams.tail).

    Two round trips it saves: a follower starts from the stream's tail as the
    last answer about the stream gave it (an older position only makes it
    publish a batch readers already have), not from a ``head`` of its own; and
    this process's own appends are published here as they are answered, so
    readers need not read them back: the follower passes over them when its
    long-poll brings them.
    """

    def __init__(self, store: RemoteStore) -> None:
        super().__init__()
        self._store = store
        self._followers: dict[str, asyncio.Task[None]] = {}
        #: The tail of each stream as the last answer about it gave it (the latest few).
        self._tails: OrderedDict[str, int] = OrderedDict()
        #: Where the appends of ours published here end, by followed stream.
        self._published: dict[str, int] = {}

    def saw(self, path: str, tail: int) -> None:
        """An answer about ``path`` said its tail was ``tail``."""
        tails = self._tails
        tails[path] = max(tail, tails.get(path, 0))
        tails.move_to_end(path)
        if len(tails) > KNOWN_TAILS:
            tails.popitem(last=False)

    def appended(self, path: str, messages: list[bytes], tail: int, closed: bool) -> None:
        """Our append of ``messages`` to ``path`` ended at ``tail``: publish it to readers
        (a worker appends session events only, one position each)."""
        self.saw(path, tail)
        if path in self._followers:
            self._publish_new(path, tail - len(messages), tail, messages, closed)

    def subscribe(self, path: str) -> None:
        super().subscribe(path)
        if path not in self._followers:
            self._followers[path] = asyncio.create_task(
                self._follow(path), name=f"tether-follow-{path}"
            )

    def unsubscribe(self, path: str) -> None:
        super().unsubscribe(path)
        if self.watcher_count(path) == 0:
            task = self._followers.pop(path, None)
            self._published.pop(path, None)
            if task is not None:
                task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._followers.values())
        self._followers.clear()
        self._published.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _follow(self, path: str) -> None:
        store = self._store
        position: int | None = None
        try:
            while True:
                try:
                    if position is None:
                        position = self._tails.get(path)
                    if position is None:
                        position = (await store.head(path)).tail
                    res = await store.wait_read(path, position, 1024 * 1024, FOLLOW_WAIT)
                except (BackendUnavailable, WorkerRefused) as err:
                    log.warning("following %s: %s; trying again", path, err)
                    await asyncio.sleep(RETRY_DELAY)
                    position = None
                    self.publish(path, -1, -1, [], False)  # readers look again for themselves
                    continue
                self._publish_new(path, res.start, res.next, res.chunks, res.closed)
                position = res.next
                if res.closed:
                    return
        except StreamNotFound:
            # Gone, or no longer ours to read (our lease went): readers stop.
            self.publish(path, 0, 0, [], False, deleted=True)
        finally:
            if self._followers.get(path) is asyncio.current_task():
                del self._followers[path]
                self._published.pop(path, None)

    def _publish_new(
        self, path: str, start: int, end: int, chunks: list[bytes], closed: bool
    ) -> None:
        """Publish the part of ``chunks`` (``start`` to ``end``) not published yet: a
        follower's read and our own append's answer bring the same events, in either
        order (the server wakes the read as it appends)."""
        published = self._published.get(path, start)
        if published > start:
            chunks, start = chunks[published - start :], min(published, end)
        if chunks or closed:
            self._published[path] = end
            self.publish(path, start, end, chunks, closed)
