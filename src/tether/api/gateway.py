"""What every gateway front shares: a request in, a run in a session, its answer out.

A front (Chat Completions, Responses, Messages) is a parser from its request
to a :class:`~tether.api.completion.Completion`, a translator from a session's
events to its answer (``api/relay.py``), and its error shape. The rest is the
same for all of them and lives here: who the caller is, the body, what the
model names, the completion's session and run (created, or continued for a
follow-up; started once per ``Idempotency-Key``), its answer's readers, and
stop on disconnect (``api/detach.py``).

Errors are raised as :class:`~tether.api.openai.errors.OpenAIError`; a front
renders its ``status`` and ``body`` in its own shape.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tether.agents.gateway import Prefetch, Prefetches, model_request
from tether.api.attachments import Attachments
from tether.api.auth import Auth, Caller, Unauthorized, session_resource
from tether.api.completion import Completion
from tether.api.detach import HEADER as DETACH_HEADER
from tether.api.detach import Readers, detach_requested
from tether.api.idempotency import (
    HEADER,
    BadIdempotencyKey,
    Idempotency,
    IdempotencyConflict,
    check_key,
    fingerprint,
)
from tether.api.openai.errors import OpenAIError, invalid
from tether.api.relay import Follow, Translator
from tether.providers.base import ChatMessage, Provider, prefetching
from tether.providers.registry import ProviderRegistry, UnknownModel
from tether.runtime.runner import Runtime
from tether.sessions.attachments import is_attachment
from tether.sessions.service import QuotaExceeded, SessionNotFound, SessionRecord, SessionService
from tether.streams import json_body
from tether.streams.json_body import JsonLimits
from tether.streams.wire import WireError, format_offset, parse_offset

#: A model name that names one of this server's agents.
AGENT_PREFIX = "agent:"


@dataclass(slots=True)
class Target:
    """What a request's ``model`` names: a provider's model, or one of this server's agents."""

    #: None for an agent.
    provider: Provider | None
    #: The provider's own name for the model ("" for an agent).
    model: str
    #: ``agent:<name>``: the agent's name.
    agent: str | None = None


def did_you_mean(model: str, available: list[str]) -> str:
    """`` Did you mean `openai/gpt-4o-mini`?`` for ``gpt-4o-mini``, or a near spelling; else ""."""
    by_bare: dict[str, list[str]] = {}
    for name in available:  # "openai/gpt-4o-mini" under "gpt-4o-mini"
        by_bare.setdefault(name.rpartition("/")[2], []).append(name)
    bare = model.rpartition("/")[2]
    close = [bare] if bare in by_bare else difflib.get_close_matches(bare, list(by_bare), n=2)
    guesses = [name for near in close for name in by_bare[near]]
    return f" Did you mean {' or '.join(f'`{g}`' for g in guesses)}?" if guesses else ""


@dataclass(slots=True)
class Started:
    """A completion's run, started (or, for an Idempotency-Key retry, found again)."""

    session_id: str
    run_id: str
    #: The stream position before the run: its answer is read from here.
    start: int
    prefetch: Prefetch | None
    #: An Idempotency-Key retry, answered from the first request's run.
    replayed: bool = False

    def headers(self, front_path: str) -> dict[str, str]:
        """What names the run in its answer, and where its stream is read again from."""
        sid = self.session_id
        return {
            "x-tether-session-id": sid,
            "x-tether-run-id": self.run_id,
            "x-tether-stream-url": f"{front_path}/{sid}/stream?offset={format_offset(self.start)}",
        }


class Gateway:
    """The front-neutral half of the gateway; every front holds one (one per app)."""

    def __init__(
        self,
        sessions: SessionService,
        runtime: Runtime,
        auth: Auth,
        registry: ProviderRegistry,
        stop: Callable[[], asyncio.Future[None]],
        prefetches: Prefetches,
        *,
        max_body: int = 10 * 1024 * 1024,
        json_limits: JsonLimits = JsonLimits(),  # noqa: B008 - frozen, never mutated
        agents: Callable[[], list[str]] = list,
        attachments: Attachments,
        idempotency: Idempotency,
        readers: Readers,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.auth = auth
        self.registry = registry
        self.stop = stop
        #: Where a completion's prefetched upstream response waits for its run.
        self.prefetches = prefetches
        self.max_body = max_body
        self.json_limits = json_limits
        self.agents = agents
        self.attachments = attachments
        self.idempotency = idempotency
        #: Who reads each run (stop on disconnect).
        self.readers = readers

    # -- the request ------------------------------------------------------------

    def caller(self, request: Request, *, reading: str | None = None) -> Caller:
        """The caller, or OpenAIError 401; a read token only reads session ``reading``.

        The key comes as ``Authorization: Bearer <key>`` (OpenAI's clients) or
        ``x-api-key: <key>`` (Anthropic's).
        """
        authorization = request.headers.get("authorization")
        if authorization is None and (key := request.headers.get("x-api-key")):
            authorization = f"Bearer {key}"
        token = request.query_params.get("token") if reading is not None else None
        try:
            who = self.auth.caller(authorization, token)
        except Unauthorized:
            if authorization:
                raise OpenAIError(
                    401, "Incorrect API key provided.", code="invalid_api_key"
                ) from None
            raise OpenAIError(
                401,
                "You didn't provide an API key. Send a tether key in an Authorization header "
                "(Authorization: Bearer <key>) or an x-api-key header.",
            ) from None
        if who.read_only and (reading is None or not who.may_read(session_resource(reading))):
            raise OpenAIError(401, "A read token cannot do this.", code="invalid_api_key")
        return who

    async def body(self, request: Request) -> tuple[Any, bytes]:
        """The body's JSON value, and its bytes (OpenAIError 413 or 400)."""
        max_body = self.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise OpenAIError(413, f"The request body is larger than {max_body} bytes.")
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > max_body:
                raise OpenAIError(413, f"The request body is larger than {max_body} bytes.")
        data = bytes(raw)
        try:
            value = json_body.parse(data, self.json_limits)
            json_body.check_value(value, self.json_limits)  # what a session's events can carry
            return value, data
        except json_body.JsonTooLarge as err:
            raise OpenAIError(413, str(err)) from None
        except WireError as err:
            raise invalid(
                "We could not parse the JSON body of your request. The request body must be "
                f"valid JSON ({err})."
            ) from None

    def target(self, model: str) -> Target:
        """What ``model`` names (OpenAIError 404 ``model_not_found`` if nothing)."""
        if model.startswith(AGENT_PREFIX):
            name = model.removeprefix(AGENT_PREFIX)
            agents = self.agents()
            if name in agents:
                return Target(None, "", agent=name)
            served = ", ".join(f"{AGENT_PREFIX}{a}" for a in agents) or "none"
            raise OpenAIError(
                404, f"The model `{model}` does not exist: this server's agents are {served}.",
                param="model", code="model_not_found",
            )  # fmt: skip
        try:
            provider, name = self.registry.resolve(model)
        except UnknownModel as err:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it."
                + did_you_mean(model, err.available),
                param="model",
                code="model_not_found",
            ) from None
        return Target(provider, name)

    def models(self) -> list[str]:
        """Every model a request may name: the upstreams', ``demo``, and ``agent:<name>``."""
        return self.registry.list_models() + [f"{AGENT_PREFIX}{a}" for a in self.agents()]

    @staticmethod
    def detach(request: Request, *, default: bool = False) -> bool:
        """Whether the request wants its run to go on when its readers leave."""
        return detach_requested(request.headers.get(DETACH_HEADER), default=default)

    async def record(self, who: Caller, session_id: str, front: str) -> SessionRecord | None:
        """The gateway session ``session_id`` of ``front``, if ``who`` may read it."""
        try:
            record = await self.sessions.record(session_id, who.owner)
        except SessionNotFound:
            return None
        gateway = record.metadata.get("gateway")
        if not isinstance(gateway, dict) or (gateway.get("front") or "chat") != front:
            return None
        return record

    # -- the run ----------------------------------------------------------------

    async def start(
        self,
        request: Request,
        who: Caller,
        req: Completion,
        target: Target,
        *,
        path: str,
        raw: bytes,
    ) -> Started:
        """The completion's run; with an ``Idempotency-Key``, started once for all retries."""
        problem = self.attachments.refusal(req.spec.model, target.agent, req.send or [])
        if problem:
            raise invalid(f"Invalid content: {problem}.", "messages", "unsupported_content")
        raw_key = request.headers.get(HEADER)
        try:
            key = None if raw_key is None else check_key(raw_key)
        except BadIdempotencyKey as err:
            raise invalid(str(err), "Idempotency-Key", err.code) from None
        if key is None:
            return await self._start(who, req, target)
        started: list[Started] = []

        async def start() -> list[Any]:
            run = await self._start(who, req, target)
            started.append(run)
            return [run.session_id, run.run_id, run.start]

        digest = hashlib.sha256(raw).hexdigest()
        try:
            outcome = await self.idempotency.once(
                who.owner, key, fingerprint("POST", path, digest), start
            )
        except IdempotencyConflict as err:
            raise OpenAIError(409, str(err), code=err.code) from None
        if not outcome.replayed:
            return started[0]
        sid, run_id, at = outcome.value
        try:
            await self.sessions.record(sid, who.owner)
        except SessionNotFound:
            raise OpenAIError(
                404, "The answer of this Idempotency-Key was deleted.", code="not_found"
            ) from None
        return Started(sid, run_id, at, None, replayed=True)

    async def _start(self, who: Caller, req: Completion, target: Target) -> Started:
        # Ask the upstream now: the session is set up while it thinks.
        prefetch = _prefetch(req, target)
        if prefetch is not None:
            # Yield once before the set-up below: the requests that arrived with
            # this one get their upstream requests written first (and an unwritten
            # prefetch's task writes this one), so a burst's set-ups run while the
            # upstream thinks instead of each delaying the next one's request.
            await asyncio.sleep(0)
        try:
            if req.session_id is not None:
                sid, run_id, start = await self._continue(req)
            else:
                sid, run_id, start = await self._set_up(who, req, target, prefetch)
        except BaseException:
            if prefetch is not None:
                prefetch.discard()
            raise
        return Started(sid, run_id, start, prefetch)

    async def _set_up(
        self, who: Caller, req: Completion, target: Target, prefetch: Prefetch | None
    ) -> tuple[str, str, int]:
        """A new session and its run; a request that fails leaves no session behind."""
        record = None
        try:
            record = await self.sessions.create(
                owner=who.owner,
                model=None if target.agent else req.spec.model,
                agent=target.agent,
                system=req.system,
                title=req.title,
                metadata={"gateway": req.spec.to_metadata()},
            )
            if prefetch is not None:
                self.prefetches.put(record.id, prefetch)
            run_id, start = await self._run(record.id, req, None, 0)  # a new stream is empty
            return record.id, run_id, start
        except QuotaExceeded:
            raise
        except BaseException:
            if record is not None:
                await self.runtime.forget(record.id)
                await self.sessions.delete(record.id)
            raise

    async def _continue(self, req: Completion) -> tuple[str, str, int]:
        """A run in an existing session, after what the request adds to it."""
        assert req.session_id is not None
        sid = req.session_id
        start = await self.sessions.end_position(sid)
        for result in req.results:
            await self.runtime.tool_result(sid, result["tool_call_id"], result.get("output"))
        run_id, start = await self._run(sid, req, req.parent_id, start)
        return sid, run_id, start

    async def _run(
        self, sid: str, req: Completion, leaf: str | None, start: int
    ) -> tuple[str, int]:
        """Seed the request's turns after ``leaf`` and start the run: (run id, position before)."""
        if req.seed:
            leaf = await self.runtime.seed(sid, req.seed)
            start = await self.sessions.end_position(sid)
        if req.send is not None:
            send, _ = await self.attachments.admit(sid, req.send)
            _, run_id, _ = await self.runtime.send(sid, send, parent_id=leaf)
        else:
            if leaf is None:
                leaf = (await self.sessions.state(sid)).fold.leaf
            if leaf is None:
                raise invalid("There is nothing to answer.", "input")
            run_id, _ = await self.runtime.answer(sid, leaf)
        return run_id, start

    async def resume_after(self, request: Request, session_id: str, what: str) -> int:
        """Where a stream URL's reader resumes: after ``?offset=`` or ``Last-Event-ID``.

        No offset: the stream's end (only what comes next). OpenAIError 400 for
        a bad offset or one past the end of ``what`` (the answer, as the error names it).
        """
        raw = request.headers.get("last-event-id") or request.query_params.get("offset")
        tail_at = await self.sessions.end_position(session_id)
        try:
            after = parse_offset(raw or "-1")
        except WireError as err:
            raise invalid(str(err), "offset") from None
        after = tail_at if after is None else after
        if after > tail_at:
            raise invalid(f"offset is beyond the end of this {what}'s stream", "offset")
        return after

    # -- the answer ---------------------------------------------------------------

    def follow(
        self, started: Started, translator: Translator, *, detach: bool, stream: bool = True
    ) -> Follow:
        """The request's own reader of its run's answer (counted unless ``detach``).

        ``stream``: the answer is streamed to the client (its reader is cut off at
        the send buffer), not sent whole once the run ends.
        """
        return self._reader(
            started.session_id, started.run_id, translator, started.start, None, not detach,
            stream,
        )  # fmt: skip

    async def reread(
        self,
        session_id: str,
        translator: Translator,
        *,
        start: int = 0,
        after: int | None = None,
    ) -> Follow:
        """A later reader of a session's answer (a resumed stream).

        It counts as a reader of the session's active run, if one is going
        and watched: a client that comes back within the grace period keeps
        its run.
        """
        active = (await self.sessions.state(session_id)).fold.active_run
        run_id = active["run_id"] if active is not None else None
        return self._reader(session_id, run_id, translator, start, after, False, True)

    def _reader(
        self,
        sid: str,
        run_id: str | None,
        translator: Translator,
        start: int,
        after: int | None,
        watch: bool,
        stream: bool,
    ) -> Follow:
        prefetches = self.prefetches
        return self.readers.follow(
            self.sessions, sid, run_id, start, translator, stop=self.stop(), after=after,
            watch=watch, on_end=lambda: prefetches.discard(sid), bounded=stream,
        )  # fmt: skip

    async def accepted(self, started: Started) -> bool:
        """Whether the upstream accepted a streamed answer's prefetched request (2xx).

        Waits for the upstream's answer head: a front holds its own response's
        headers until then, so that a request the upstream refuses outright
        gets an HTTP error, as from the upstream itself. False when there is
        no written prefetch to wait for (read on instead).
        """
        prefetch, sid = started.prefetch, started.session_id
        answered = prefetch.answered if prefetch is not None else None
        if answered is None or (run := self.runtime.run_task(sid, started.run_id)) is None:
            return False
        # A run that ends without taking the prefetch drops it: the wait ends.
        run.add_done_callback(lambda _: self.prefetches.discard(sid))
        return 200 <= await answered < 300

    @staticmethod
    async def whole(follow: Follow, request: Request) -> None:
        """Read a run's answer to its end, for a response sent whole.

        The client may leave meanwhile: that ends the read (and counts as its
        reader leaving) as a streamed answer's disconnect does.
        """
        gone = asyncio.ensure_future(_disconnected(request))
        gone.add_done_callback(lambda _: _settle(follow.leave))
        try:
            async for _ in follow.frames:
                pass
        finally:
            gone.cancel()
            try:
                await follow.aclose()
            finally:
                await asyncio.wait((gone,))


async def _disconnected(request: Request) -> None:
    receive = request.receive
    while (await receive())["type"] != "http.disconnect":
        pass


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _prefetch(req: Completion, target: Target) -> Prefetch | None:
    """Start the upstream request of a completion before its session exists.

    Only for plain conversations in new sessions (no tool calls in the
    history), whose upstream messages are known from the request alone, and
    for providers whose request depends on nothing else (a PrefetchingProvider:
    not the demo model, which seeds its answer with the run id); the run checks
    that it would have sent exactly this request before it takes the response.
    """
    provider = target.provider
    if (
        req.send is None
        or req.session_id is not None
        or provider is None
        or not prefetching(provider)
        or any(is_attachment(p) for p in req.send)  # the run may send them from their stream
    ):
        return None
    messages = [ChatMessage("system", req.system)] if req.system else []
    for turn in req.seed:
        if turn["role"] == "user":
            messages.append(ChatMessage("user", turn["text"]))
        elif turn.get("tool_calls"):
            return None
        else:
            messages.append(ChatMessage("assistant", turn["text"], []))
    messages.append(ChatMessage("user", "".join(p["text"] for p in req.send)))
    return Prefetch(provider, model_request(target.model, messages, req.spec))
