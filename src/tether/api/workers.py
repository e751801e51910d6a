"""The worker API: what ``tether worker`` processes may do to the store, and nothing more.

A worker runs the runtime's own drivers over a store that calls this API
(tether.runtime.remote_store). Each call is checked against one rule: a
worker key reaches a session only while a worker of that key holds the
session's lease (its owner names start with the key's identity and ``/``).

- It may take the lease of a session whose agent ``tether worker`` processes
  serve (``TETHER_WORKER_AGENTS``); the session must exist (else 404). A
  webhook agent's sessions (``TETHER_WEBHOOK_AGENTS``) are for its wakes'
  callback tokens only (tether.api.wake_tokens): to a worker key, 404.
- It reads (head, read, records) only sessions whose lease it holds: any
  other session does not exist for it (404). So it is with the attachments
  stored in streams of their own (``attachment``): those of a session it
  holds, named under that session (tether.sessions.attachments), and no other.
- It appends to a session's stream only as its lease holder (fenced
  atomically with the append): else 403 ``lease_lost``.
- It reads the work and wake streams of the agents it serves, writes none;
  it claims, acks and releases the wakes of their workers' subscriptions
  (tether.runtime.dispatch).

Worker keys (``TETHER_WORKER_KEYS``) are not API keys: the rest of the API
refuses them, and these routes refuse API keys. Keys are compared by digest
and never logged or echoed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from tether.api.errors import error_body
from tether.api.wake_tokens import TokenRefused, WakeTokens
from tether.runtime.dispatch import (
    WORKERS,
    WorkDispatch,
    parse_webhook_agents,
    subscription_key,
    wake_stream,
    work_stream,
)
from tether.runtime.names import EXPIRING, RUNS, lease_name
from tether.sessions import checkpoints
from tether.sessions.service import RECORDS, SessionService
from tether.store.base import AppendRequest, ReadResult, Store
from tether.store.errors import LeaseLost, StreamNotFound
from tether.streams.tail import tail
from tether.subscriptions.service import SubscriptionService
from tether.subscriptions.state import AlreadyClaimed, Fenced

#: Longest a worker's read may wait for new data (its follower asks again after).
MAX_WAIT = 20.0
#: Largest read a worker may ask for at once.
MAX_READ = 4 * 1024 * 1024
#: Most bytes of a session's events a ``take`` answers with (its fold reads on for more).
TAKE_READ = 1024 * 1024
#: Most bytes of pending work stream entries a ``claim`` answers with (the worker's read).
CLAIM_READ = 64 * 1024
#: Most appends one ``append_batch`` request may carry.
MAX_BATCH = 256
#: Largest attachment read, unless told (the server's request body limit: no front
#: stores a larger one).
MAX_ATTACHMENT = 10 * 1024 * 1024
#: An attachment stream's name: ``sessions/<session id>/attachments/<attachment id>``.
_ATTACHMENT = re.compile(r"sessions/([^/]+)/attachments/[^/]+")
_SESSIONS = "sessions/"
_SESSION_LEASE = "session:"
_ANSWER_LEASE = "answer:"


class WorkerConfig:
    """Worker keys (by digest) and the agents workers serve, from the environment."""

    def __init__(
        self,
        keys: list[str] = [],  # noqa: B006
        agents: list[str] = [],  # noqa: B006
        webhooks: Mapping[str, str] | None = None,
    ) -> None:
        """``webhooks``: agent -> URL of the agents served by a webhook handler
        (docs/workers.md, Webhook mode); they are worker-served agents too."""
        self._ids = {_digest(k): worker_identity(k) for k in keys}
        self.webhooks = dict(webhooks or {})
        self.agents = frozenset(agents) | frozenset(self.webhooks)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env
        keys = [k.strip() for k in env.get("TETHER_WORKER_KEYS", "").split(",") if k.strip()]
        agents = [a.strip() for a in env.get("TETHER_WORKER_AGENTS", "").split(",") if a.strip()]
        return cls(keys, agents, parse_webhook_agents(env.get("TETHER_WEBHOOK_AGENTS", "")))

    @property
    def pulled(self) -> frozenset[str]:
        """The agents ``tether worker`` processes serve (not a webhook handler)."""
        return self.agents - frozenset(self.webhooks)

    @property
    def enabled(self) -> bool:
        return bool(self._ids) or bool(self.webhooks)

    def served_by(self, ident: str) -> frozenset[str]:
        """The agents whose sessions caller ``ident`` may take: a worker key's, those
        ``tether worker`` processes serve; any other's (a callback token's, whose wake
        names its sessions), the webhook agents'."""
        return self.pulled if ident in self._ids.values() else frozenset(self.webhooks)

    def identity(self, authorization: str | None) -> str | None:
        """The worker identity of ``Authorization: Bearer <worker key>``, or None."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        return self._ids.get(_digest(value.strip()))


def worker_identity(key: str) -> str:
    return "wkr_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _digest(key: str) -> bytes:
    return hmac.new(b"w", key.encode(), "sha256").digest()


class Refused(Exception):
    """A call the worker may not make: answered with ``status`` and ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _not_found(what: str) -> Refused:
    return Refused(404, "not_found", f"not found: {what}")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise Refused(400, "bad_request", "expected base64 text")
    return base64.b64decode(text)


class WorkerCalls:
    """One method per worker API operation, each checking the caller first."""

    def __init__(
        self,
        store: Store,
        sessions: SessionService,
        config: WorkerConfig,
        dispatch: WorkDispatch,
        stop: Callable[[], Any],
        max_attachment: int = MAX_ATTACHMENT,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.config = config
        self.dispatch = dispatch
        self.lease_ttl = dispatch.lease_ttl
        self._stop = stop
        #: Largest attachment a worker reads (413 past it).
        self.max_attachment = max_attachment

    # -- the checks --------------------------------------------------------------

    @staticmethod
    def _owner(ident: str, body: dict[str, Any]) -> str:
        owner = body.get("owner")
        if not isinstance(owner, str) or not owner.startswith(ident + "/"):
            raise Refused(403, "forbidden", "a worker's lease owner starts with its identity")
        return owner

    async def _holds(self, ident: str, session_id: str) -> bool:
        holder = await self.store.lease_holder(lease_name(session_id))
        return holder is not None and holder.startswith(ident + "/")

    async def _readable(self, ident: str, path: Any) -> str:
        """``path`` if the worker may read it (a session it drives, a work stream)."""
        if not isinstance(path, str):
            raise Refused(400, "bad_request", "path must be a string")
        if path.startswith(_SESSIONS) and await self._holds(ident, path[len(_SESSIONS) :]):
            return path
        if any(path in (work_stream(a), wake_stream(a)) for a in self.config.served_by(ident)):
            return path
        raise _not_found(path)

    def _agent(self, body: dict[str, Any]) -> str:
        agent = body.get("agent")
        if not isinstance(agent, str) or agent not in self.config.pulled:
            raise _not_found(f"worker-served agent {agent}")
        return agent

    def _subscriptions(self) -> SubscriptionService:
        subscriptions = self.dispatch.subscriptions
        if subscriptions is None:
            raise Refused(503, "unavailable", "the server is starting")
        return subscriptions

    async def _session_held(self, ident: str, session_id: Any) -> str:
        if not isinstance(session_id, str) or not await self._holds(ident, session_id):
            raise _not_found(f"session {session_id}")
        return session_id

    # -- operations ----------------------------------------------------------------

    async def hello(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """A worker says it is alive and which agents it serves (its heartbeat)."""
        instance = self._owner(ident, body)
        agents = [a for a in body.get("agents", []) if a in self.config.pulled]
        info = {"agents": agents, "at": time.time()}
        await self.store.put_record(WORKERS, instance, orjson.dumps(info))
        return {"identity": ident, "agents": agents, "lease_ttl": self.lease_ttl}

    async def head(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        path = await self._readable(ident, body.get("path"))
        return {"meta": _meta(await self.store.head(path))}

    async def read(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        path = await self._readable(ident, body.get("path"))
        offset = body.get("offset")
        max_bytes = min(int(body.get("max_bytes") or MAX_READ), MAX_READ)
        wait = min(float(body.get("wait") or 0.0), MAX_WAIT)
        if wait > 0 and isinstance(offset, int):
            # Until something is there to read, the wait passes, or the server stops.
            async for _ in tail(self.store, path, offset, stop=self._stop(), heartbeat=wait):
                break
        return _read_answer(await self.store.read(path, offset, max_bytes))

    async def attachment(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """The bytes of an attachment stream of a session whose lease the caller holds,
        whole (413 past ``max_attachment``): what the models of its run are sent."""
        path = body.get("path")
        match = _ATTACHMENT.fullmatch(path) if isinstance(path, str) else None
        if match is None or not await self._holds(ident, match.group(1)):
            raise _not_found(str(path))
        data = bytearray()
        position: int | None = 0
        while True:
            res = await self.store.read(match.group(0), position, MAX_READ)
            for chunk in res.chunks:
                data += chunk
            if len(data) > self.max_attachment:
                raise Refused(413, "too_large", f"attachment {path} is over the read limit")
            if res.up_to_date or not res.chunks:
                return {"data": _b64(bytes(data))}
            position = res.next

    async def append(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith(_SESSIONS):
            raise Refused(403, "forbidden", "a worker appends only to sessions it drives")
        lease = body.get("lease")
        if not isinstance(lease, list) or len(lease) != 2:
            raise Refused(403, "forbidden", "a worker appends only as a session's lease holder")
        name, owner = str(lease[0]), self._owner(ident, {"owner": lease[1]})
        if name != lease_name(path[len(_SESSIONS) :]):
            raise Refused(403, "forbidden", "a worker appends only as a session's lease holder")
        messages = [_unb64(m) for m in body.get("messages", [])]
        try:
            res = await self.store.append(
                path, AppendRequest(messages, body.get("content_type"), lease=(name, owner))
            )
        except LeaseLost:
            raise Refused(403, "lease_lost", "this worker does not hold the session") from None
        self.sessions.grew(path[len(_SESSIONS) :], res.tail)  # the server checkpoints its fold
        return {"tail": res.tail, "closed": res.closed}

    async def append_batch(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """Several appends, each checked and answered as ``append`` would (an error per
        refused one): in order per stream, streams side by side."""
        items = body.get("appends")
        if not isinstance(items, list) or len(items) > MAX_BATCH:
            raise Refused(400, "bad_request", f"appends: a list of at most {MAX_BATCH}")
        results: list[dict[str, Any]] = [{} for _ in items]
        by_path: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            path = item.get("path") if isinstance(item, dict) else None
            by_path.setdefault(str(path), []).append(i)

        async def one(i: int) -> None:
            try:
                if not isinstance(items[i], dict):
                    raise Refused(400, "bad_request", "each append is a JSON object")
                results[i] = await self.append(ident, items[i])
            except Refused as err:
                results[i] = {
                    "error": {"status": err.status, "code": err.code, "message": str(err)}
                }
            except StreamNotFound as err:
                results[i] = {"error": {"status": 404, "code": "not_found", "message": str(err)}}
            except (ValueError, TypeError) as err:
                results[i] = {"error": {"status": 400, "code": "bad_request", "message": str(err)}}

        async def in_order(indices: list[int]) -> None:
            for i in indices:
                await one(i)

        await asyncio.gather(*(in_order(ix) for ix in by_path.values()))
        return {"results": results}

    async def record_get(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        namespace, key = body.get("namespace"), body.get("key")
        if namespace not in (RECORDS, checkpoints.NAMESPACE):
            raise _not_found(f"record {namespace}/{key}")
        await self._session_held(ident, key)  # its record, or its fold's checkpoint
        raw = await self.store.get_record(str(namespace), str(key))
        return {"value": None if raw is None else _b64(raw)}

    async def record_put(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("namespace") != RUNS:
            raise Refused(403, "forbidden", "a worker writes only run records")
        raw, key = _unb64(body.get("value")), str(body.get("key"))
        await self._session_held(ident, orjson.loads(raw).get("session_id"))
        old = await self.store.get_record(RUNS, key)
        if old is not None:  # another session's run record is not this worker's to replace
            await self._session_held(ident, orjson.loads(old).get("session_id"))
        await self.store.put_record(RUNS, key, raw)
        return {}

    async def record_delete(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("namespace") != RUNS:
            raise Refused(403, "forbidden", "a worker deletes only run records")
        key = str(body.get("key"))
        raw = await self.store.get_record(RUNS, key)
        if raw is not None:
            await self._session_held(ident, orjson.loads(raw).get("session_id"))
            await self.store.delete_record(RUNS, key)
        return {}

    async def lease_acquire(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"acquired": (await self._acquire(ident, body))[0]}

    async def _acquire(self, ident: str, body: dict[str, Any]) -> tuple[bool, bytes | None]:
        """Whether the lease ``body`` names was taken, and the record of its session
        (read to check the session's agent; None for an answer's lease)."""
        owner, name = self._owner(ident, body), str(body.get("name"))
        raw = None
        if name.startswith(_SESSION_LEASE):
            session_id = name[len(_SESSION_LEASE) :]
            raw = await self.store.get_record(RECORDS, session_id)
            agent = None if raw is None else orjson.loads(raw).get("agent")
            if agent is None or agent not in self.config.served_by(ident):
                raise _not_found(f"session {session_id}")
        elif name.startswith(_ANSWER_LEASE):
            await self._session_held(ident, name[len(_ANSWER_LEASE) :].partition(":")[0])
        else:
            raise Refused(403, "forbidden", "a worker takes only session and answer leases")
        ttl = min(float(body.get("ttl") or self.lease_ttl), 10 * self.lease_ttl)
        return await self.store.acquire_lease(name, owner, ttl), raw

    async def take(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """``lease_acquire`` of a session's lease and, once it is held, in the same answer
        what a driver reads first: the session's record, its fold's checkpoint, its
        stream's head and (with no checkpoint) its events from the start. One round trip
        where there were six; each part is what its own call would have answered."""
        name = body.get("name")
        if not isinstance(name, str) or not name.startswith(_SESSION_LEASE):
            raise Refused(400, "bad_request", "a worker takes a session's lease")
        acquired, record = await self._acquire(ident, body)
        if not acquired:
            return {"acquired": False}
        assert record is not None  # a session's lease is taken only with its record
        session_id = name[len(_SESSION_LEASE) :]
        path = _SESSIONS + session_id
        checkpoint = await self.store.get_record(checkpoints.NAMESPACE, session_id)
        answer: dict[str, Any] = {"acquired": True, "record": _b64(record)}
        answer["checkpoint"] = None if checkpoint is None else _b64(checkpoint)
        if checkpoint is None:  # a fold starts from the first event: read them
            answer["read"] = _read_answer(await self.store.read(path, 0, TAKE_READ))
            answer["head"] = answer["read"]["meta"]
        else:
            answer["head"] = _meta(await self.store.head(path))
        return answer

    async def lease_renew(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        owner = self._owner(ident, body)
        names = [str(n) for n in body.get("names", [])]
        ttl = min(float(body.get("ttl") or self.lease_ttl), 10 * self.lease_ttl)
        return {"lost": await self.store.renew_leases(names, owner, ttl)}

    async def lease_release(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.store.release_lease(str(body.get("name")), self._owner(ident, body))
        return {}

    async def index_put(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        member = self._expiring(body)
        await self._session_held(ident, member.partition(" ")[0])
        await self.store.index_put(EXPIRING, member, str(body.get("key")))
        return {}

    async def index_remove(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        member = self._expiring(body)
        await self._session_held(ident, member.partition(" ")[0])
        await self.store.index_remove(EXPIRING, member)
        return {}

    @staticmethod
    def _expiring(body: dict[str, Any]) -> str:
        if body.get("name") != EXPIRING:
            raise Refused(403, "forbidden", "a worker writes only the expiring-waits index")
        return str(body.get("member"))

    async def claim(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """Claim the current wake of an agent's workers' subscription (409 if held)."""
        agent, owner = self._agent(body), self._owner(ident, body)
        try:
            claimed = await self._subscriptions().claim(subscription_key(agent), owner)
        except AlreadyClaimed as err:
            raise Refused(409, "already_claimed", str(err)) from None
        work = work_stream(agent)
        acked = claimed.sub.links[work].acked
        tail = claimed.tails.get(work, acked)
        return {
            "wake_id": claimed.wake.id,
            "generation": claimed.wake.generation,
            "token": claimed.token,
            "offset": acked,
            "tail": tail,
            # What the worker reads next, in this answer: the first pending entries.
            "work": _read_answer(await self.store.read(work, acked, CLAIM_READ))
            if tail > acked
            else None,
        }

    async def ack(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """Ack the work stream up to ``offset`` and end the wake (``done``), or extend it."""
        agent = self._agent(body)
        acks = [(work_stream(agent), int(body.get("offset") or 0))]
        try:
            more = await self._subscriptions().ack(
                subscription_key(agent), str(body.get("token")), body.get("wake_id"),
                body.get("generation"), acks, bool(body.get("done")),
            )  # fmt: skip
        except Fenced:
            raise Refused(409, "fenced", "that wake is no longer this worker's") from None
        return {"more": more}

    async def release(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent(body)
        try:
            await self._subscriptions().release(
                subscription_key(agent), str(body.get("token")), body.get("wake_id"),
                body.get("generation"),
            )  # fmt: skip
        except Fenced:
            raise Refused(409, "fenced", "that wake is no longer this worker's") from None
        return {}

    async def note_run(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        session_id = await self._session_held(ident, body.get("session"))
        usage = {str(k): int(v) for k, v in (body.get("usage") or {}).items()}
        await self.sessions.note_run(
            session_id, str(body.get("status")), usage=usage, touch=bool(body.get("touch"))
        )
        return {}


def _meta(meta: Any) -> dict[str, Any]:
    return asdict(meta)


def _read_answer(res: ReadResult) -> dict[str, Any]:
    return {
        "meta": _meta(res.meta),
        "start": res.start,
        "chunks": [_b64(c) for c in res.chunks],
        "next": res.next,
        "up_to_date": res.up_to_date,
        "closed": res.closed,
    }


def build_worker_router(calls: WorkerCalls, tokens: WakeTokens | None = None) -> APIRouter:
    """``tokens``: webhook wakes' callback tokens, also accepted (tether.api.wake_tokens)."""
    router = APIRouter(include_in_schema=False)
    ops: dict[str, Callable[[str, dict[str, Any]], Any]] = {
        name: getattr(calls, name)
        for name in (
            "hello", "head", "read", "attachment", "append", "record_get", "record_put",
            "record_delete", "lease_acquire", "take", "lease_renew", "lease_release", "index_put",
            "index_remove", "note_run", "claim", "ack", "release", "append_batch",
        )
    }  # fmt: skip

    @router.post("/v1/worker/{op}")
    async def worker_call(op: str, request: Request) -> Response:
        caller = await _caller(calls.config, tokens, request.headers.get("authorization"))
        if isinstance(caller, Response):
            return caller
        ident, by_token = caller
        handler = ops.get(op)
        if handler is None and by_token is None:
            return error_body(404, "not_found", f"no worker operation {op!r}")
        try:
            raw = await request.body()
        except ClientDisconnect:  # the worker went away (stopped) mid-request
            return Response(status_code=400)
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise Refused(400, "bad_request", "the body is a JSON object")
            answer = await _answer(by_token, handler, ident, op, body)
        except orjson.JSONDecodeError:
            return error_body(400, "bad_request", "the body is not JSON")
        except Refused as err:
            return error_body(err.status, err.code, str(err))
        except StreamNotFound as err:
            return error_body(404, "not_found", str(err))
        except (ValueError, TypeError) as err:
            return error_body(400, "bad_request", str(err))
        return Response(orjson.dumps(answer), media_type="application/json")

    return router


async def _caller(
    config: WorkerConfig, tokens: WakeTokens | None, authorization: str | None
) -> tuple[str, Callable[..., Awaitable[Any]] | None] | Response:
    """Who calls: a worker key's identity; or a webhook wake's callback token, whose
    calls go through its checks (tether.api.wake_tokens); else the refusal."""
    ident = config.identity(authorization)
    if ident is not None:
        return ident, None
    try:
        scope = None if tokens is None else await tokens.scope(authorization)
    except TokenRefused as err:
        return error_body(err.status, err.code, str(err))
    if scope is None or tokens is None:
        return error_body(401, "unauthorized", "a worker key is required")
    return scope.identity, partial(tokens.call, scope)


async def _answer(
    by_token: Callable[..., Awaitable[Any]] | None,
    handler: Callable[[str, dict[str, Any]], Any] | None,
    ident: str,
    op: str,
    body: dict[str, Any],
) -> Any:
    """The operation's answer, for a worker key or (``by_token``) a callback token."""
    if by_token is None:
        assert handler is not None  # an unknown operation was answered 404
        return await handler(ident, body)
    try:
        return await by_token(op, body, handler)
    except TokenRefused as err:
        raise Refused(err.status, err.code, str(err)) from None
