"""The Responses API's routes: create, retrieve (and resume), cancel, delete.

A response is a run in a gateway session (see :class:`~tether.api.gateway.Gateway`);
its id names both (:func:`~tether.api.responses_api.request.response_id`), so
nothing indexes it. Each run's request settings are kept beside the session,
in the ``responses`` records keyed by run id (a session continued by
``previous_response_id`` holds runs with different settings, and the session's
own record holds only the latest, for its agent). Errors come in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from tether.agents.gateway import GatewaySpec
from tether.api.auth import Caller
from tether.api.completion import Completion
from tether.api.gateway import Gateway, Started, Target
from tether.api.idempotent_routes import IDEMPOTENCY_HEADER, REPLAYED
from tether.api.openai.errors import OpenAIError, auth_header, invalid, store_error
from tether.api.relay import EventStreamResponse, Follow, Frames
from tether.api.responses_api.events import ResponseTranslator
from tether.api.responses_api.follow_up import check_follow_up
from tether.api.responses_api.input_items import input_items
from tether.api.responses_api.request import (
    Settings,
    parse_request,
    parse_response_id,
    response_id,
)
from tether.runtime.errors import Conflict, InvalidInput
from tether.sessions.service import QuotaExceeded, SessionRecord
from tether.store.errors import BackendUnavailable, InsufficientStorage

log = logging.getLogger(__name__)

RESPONSES_PATH = "/v1/responses"
FRONT = "responses"
#: The namespace of each response's settings, beside the sessions (key: its run id).
RECORDS = "responses"
#: Seconds a cancel waits for the run's end to reach the log before it answers.
CANCEL_WAIT = 5.0

Handler = Callable[[], Awaitable[Response]]


class ResponsesRoutes:
    """``/v1/responses`` and the routes of one response, as FastAPI routes (:attr:`router`)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.router = APIRouter(tags=["responses"])
        add = self.router.add_api_route
        add(
            RESPONSES_PATH, self.create, methods=["POST"], response_model=None,
            openapi_extra=IDEMPOTENCY_HEADER,
        )  # fmt: skip
        one = RESPONSES_PATH + "/{response_id}"
        add(one, self.retrieve, methods=["GET"], response_model=None)
        add(one, self.delete, methods=["DELETE"], response_model=None)
        add(one + "/cancel", self.cancel, methods=["POST"], response_model=None)
        add(one + "/input_items", self.input_items, methods=["GET"], response_model=None)

    # -- the routes ---------------------------------------------------------------

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/responses`` as plain ASGI, as TetherApp serves it (see :meth:`create`)."""
        await (await self.create(Request(scope, receive)))(scope, receive, send)

    async def create(self, request: Request) -> Response:
        """Create a response, streamed or not (docs/responses.md)."""
        return await _guarded(lambda: self._create(request))

    async def retrieve(self, response_id: str, request: Request) -> Response:
        """The response object now; with ``stream=true``, its events from ``starting_after``."""
        return await _guarded(lambda: self._retrieve(response_id, request))

    async def cancel(self, response_id: str, request: Request) -> Response:
        """Stop the response's run; answers the response object once the stop is in the log."""
        return await _guarded(lambda: self._cancel(response_id, request))

    async def delete(self, response_id: str, request: Request) -> Response:
        """Delete the response's session (the log is not edited: see docs/responses.md)."""
        return await _guarded(lambda: self._delete(response_id, request))

    async def input_items(self, response_id: str, request: Request) -> Response:
        """The response's input items (``order``, ``limit``, ``after``: OpenAI's paging)."""
        return await _guarded(lambda: self._input_items(response_id, request))

    # -- create ---------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        gateway = self.gateway
        who = gateway.caller(request)
        body, raw = await gateway.body(request)
        parsed = parse_request(body)
        req, settings = parsed.completion, parsed.settings
        target = gateway.target(req.spec.model)
        req.spec.front = FRONT
        req.spec.extra = settings.to_extra()
        if settings.previous_response_id is not None:
            await self._follow_up(who, req, settings.previous_response_id, target)
        started = await gateway.start(request, who, req, target, path=RESPONSES_PATH, raw=raw)
        if not started.replayed:
            await self._keep(started, req.spec)
        response = await self._answer(request, started, req.spec, settings, req.session_id)
        if started.replayed:
            response.headers[REPLAYED] = "true"
        return response

    async def _follow_up(self, who: Caller, req: Completion, previous: str, target: Target) -> None:
        """Make ``req`` continue the session of response ``previous`` (checked first)."""
        sid, run_id, record, _ = await self._find(who, previous, param="previous_response_id")
        state = await self.gateway.sessions.state(sid)
        check_follow_up(state.fold, run_id, previous, req, record.system)
        if (target.agent or None) != record.agent:
            raise invalid(
                "A follow-up must name the model of the conversation it continues when that is "
                f"an agent (agent:{record.agent}), and no agent otherwise.",
                "model",
            )
        # The session's agent is built from its record: this run's settings. Read
        # afresh, so that the last run's end (its status, its usage) is not undone.
        record = await self.gateway.sessions.record(sid)
        record.model = None if target.agent else req.spec.model
        record.metadata["gateway"] = req.spec.to_metadata()
        await self.gateway.sessions.save(record)
        req.session_id = sid

    async def _keep(self, started: Started, spec: GatewaySpec) -> None:
        """Keep the run's settings, for every later read of the response."""
        value = {"session_id": started.session_id, "spec": spec.to_metadata()}
        await self.gateway.sessions.put_extra(RECORDS, started.run_id, orjson.dumps(value))

    async def _answer(
        self,
        request: Request,
        started: Started,
        spec: GatewaySpec,
        settings: Settings,
        continued: str | None,
    ) -> Response:
        gateway = self.gateway
        sid, run_id = started.session_id, started.run_id
        rid = response_id(sid, run_id)
        headers = {"x-tether-session-id": sid, "x-tether-run-id": run_id}
        if settings.store:
            headers["x-tether-stream-url"] = f"{RESPONSES_PATH}/{rid}?stream=true"
        translator = ResponseTranslator(spec, settings, sid, run_id, frames=spec.stream)
        follow = gateway.follow(
            started, translator, detach=gateway.detach(request), stream=spec.stream
        )
        if not settings.store and continued is None:
            _forget_after(gateway, started, follow, translator)
        if not spec.stream:
            await gateway.whole(follow, request)
            err = translator.http_error()
            if err is not None:
                return err.response(headers)
            if not translator.finished:
                return OpenAIError(
                    503, "The server is shutting down; retrieve the response later.",
                    type="server_error",
                ).response(headers)  # fmt: skip
            return JSONResponse(translator.response(), headers=headers)
        # Hold the headers until the upstream has accepted the request, or the
        # model has said something: a request the upstream refuses outright
        # gets an HTTP error, as from OpenAI. Later errors come in the stream.
        if await gateway.accepted(started):
            return EventStreamResponse(follow, headers)
        head: list[bytes] = []
        async for frames in follow.frames:
            if frames is None:
                break
            head += frames
            if translator.items or translator.finished:
                break
        err = translator.http_error()
        if err is not None and not translator.items:
            await follow.aclose()
            return err.response(headers)
        return EventStreamResponse(follow, headers, head=b"".join(head))

    # -- one response -----------------------------------------------------------------

    def _reader(self, request: Request, rid: str) -> Caller:
        """The caller of a read of response ``rid`` (a read token of its session may)."""
        ids = parse_response_id(rid)
        return self.gateway.caller(request, reading=ids[0] if ids else "")

    async def _find(
        self, who: Caller, rid: str, *, param: str | None = None
    ) -> tuple[str, str, SessionRecord, GatewaySpec]:
        """(session id, run id, session record, the run's settings) of a stored response
        ``who`` may read; OpenAIError 404 (400 for a ``previous_response_id``) otherwise."""
        ids = parse_response_id(rid)
        if ids is not None:
            sid, run_id = ids
            record = await self.gateway.record(who, sid, FRONT)
            raw = None if record is None else await self.gateway.sessions.get_extra(RECORDS, run_id)
            kept = orjson.loads(raw) if raw is not None else {}
            if record is not None and kept.get("session_id") == sid:
                spec = GatewaySpec.from_metadata(kept["spec"])
                if Settings.from_extra(spec.extra).store:
                    return sid, run_id, record, spec
        if param is not None:
            raise invalid(
                f"Previous response with id '{rid}' not found.", param,
                "previous_response_not_found",
            )  # fmt: skip
        raise OpenAIError(
            404, f"Response with id '{rid}' not found.", param="response_id", code="not_found"
        )

    async def _retrieve(self, rid: str, request: Request) -> Response:
        sid, run_id, _, spec = await self._find(self._reader(request, rid), rid)
        settings = Settings.from_extra(spec.extra)
        query = request.query_params
        stream = query.get("stream", "false").lower()
        if stream not in ("true", "false"):
            raise invalid("Invalid value for 'stream': expected true or false.", "stream")
        if stream == "false":
            translator = ResponseTranslator(spec, settings, sid, run_id, frames=False)
            await self._read_now(sid, translator)
            return JSONResponse(translator.response())
        after = _starting_after(query.get("starting_after"))
        translator = ResponseTranslator(spec, settings, sid, run_id, starting_after=after)
        follow = await self.gateway.reread(sid, translator)
        return EventStreamResponse(follow, {"x-tether-session-id": sid, "x-tether-run-id": run_id})

    async def _read_now(self, sid: str, translator: ResponseTranslator) -> None:
        """Bring ``translator`` up to the session's log as it is now."""
        sessions, position = self.gateway.sessions, 0
        while not translator.finished:
            res = await sessions.read_events(sid, position, 1 << 20)
            for chunk in res.chunks:
                translator.apply(orjson.loads(chunk))
            position = res.next
            if res.up_to_date:
                return

    async def _cancel(self, rid: str, request: Request) -> Response:
        sid, run_id, _, spec = await self._find(self.gateway.caller(request), rid)
        settings = Settings.from_extra(spec.extra)
        now = ResponseTranslator(spec, settings, sid, run_id, frames=False)
        await self._read_now(sid, now)
        if now.finished:
            return JSONResponse(now.response())
        with contextlib.suppress(Conflict):
            await self.gateway.runtime.cancel(sid, run_id)
        ended = ResponseTranslator(spec, settings, sid, run_id, frames=False)
        follow = Follow(self.gateway.sessions, sid, 0, ended, stop=self.gateway.stop())
        try:
            async with asyncio.timeout(CANCEL_WAIT):
                async for _ in follow.frames:
                    pass
        except TimeoutError:
            pass  # another replica runs it: answered as it is now
        finally:
            await follow.aclose()
        return JSONResponse(ended.response())

    async def _input_items(self, rid: str, request: Request) -> Response:
        sid, run_id, _, _ = await self._find(self._reader(request, rid), rid)
        items = input_items((await self.gateway.sessions.state(sid)).fold, run_id)
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid("Invalid value for 'order': expected asc or desc.", "order")
        limit = query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise invalid("Invalid value for 'limit': expected 1 to 100.", "limit")
        if order == "desc":
            items.reverse()
        after = query.get("after")
        if after is not None:
            ids = [i["id"] for i in items]
            if after not in ids:
                raise invalid(f"No input item '{after}' in this response.", "after")
            items = items[ids.index(after) + 1 :]
        page = items[: int(limit)]
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > len(page),
            }
        )

    async def _delete(self, rid: str, request: Request) -> Response:
        sid, _, _, _ = await self._find(self.gateway.caller(request), rid)
        gateway = self.gateway
        await _forget(gateway, sid, set((await gateway.sessions.state(sid)).fold.runs))
        return JSONResponse({"id": rid, "object": "response", "deleted": True})


def _starting_after(raw: str | None) -> int:
    if raw is None:
        return -1
    try:
        value = int(raw)
    except ValueError:
        value = -2
    if value < -1:
        raise invalid(
            "Invalid value for 'starting_after': expected a sequence number.", "starting_after"
        )
    return value


async def _forget(gateway: Gateway, sid: str, runs: set[str]) -> None:
    """Delete a session and its responses' settings (its run stops, if one is going)."""
    await gateway.runtime.forget(sid)
    await gateway.sessions.delete(sid)
    store = gateway.sessions.store
    for run_id in runs:
        await store.delete_record(RECORDS, run_id)


def _forget_after(
    gateway: Gateway, started: Started, follow: Follow, translator: ResponseTranslator
) -> None:
    """``store: false``: delete the session once its reader is done and its run has ended.

    A reader that read the run to its end deletes it before its answer ends
    (the client never sees it kept); one that left earlier leaves it to the
    run's end.
    """
    sid, run_id = started.session_id, started.run_id
    run = gateway.runtime.run_task(sid, run_id)

    async def frames(inner: AsyncGenerator[Frames, None]) -> AsyncGenerator[Frames, None]:
        try:
            async for batch in inner:
                yield batch
        finally:
            await inner.aclose()
            if run is not None and not run.done() and not translator.finished:
                run.add_done_callback(lambda _: _spawn(_forget(gateway, sid, {run_id})))
            else:
                if run is not None:
                    await asyncio.wait((run,))  # its run-end is written: it is ending
                await _forget(gateway, sid, {run_id})

    follow.frames = frames(follow.frames)


def _spawn(work: Awaitable[None]) -> None:
    task = asyncio.ensure_future(work)
    _FORGETTING.add(task)
    task.add_done_callback(_FORGETTING.discard)


#: store: false sessions being deleted (their tasks must be referenced until they finish).
_FORGETTING: set[asyncio.Future[None]] = set()


async def _guarded(handler: Handler) -> Response:
    """A route's answer, its failures in OpenAI's shape."""
    try:
        return await handler()
    except OpenAIError as err:
        return err.response(auth_header(err))
    except QuotaExceeded as err:
        return OpenAIError(
            429, str(err), type="insufficient_quota", code="insufficient_quota"
        ).response()
    except Conflict as err:  # a race with another request on the same conversation
        return OpenAIError(409, str(err), code="conflict").response()
    except InvalidInput as err:
        return invalid(str(err)).response()
    except ClientDisconnect:
        return Response(status_code=499)  # the client went: no one reads this
    except (BackendUnavailable, InsufficientStorage) as err:
        # The store cannot take writes for now; nothing was acknowledged: a retry is safe.
        return store_error(err).response({"retry-after": str(err.retry_after)})
    except Exception:
        log.exception("a /v1/responses request failed")
        return OpenAIError(
            500, "The server had an error while processing your request.", type="server_error"
        ).response()
