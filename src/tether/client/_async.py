"""The asynchronous client: ``AsyncTether``, its ``sessions``, and ``AsyncRun`` handles.

``scripts/unasync.py`` writes ``client/_sync.py`` from ``client/_async.py``:
change the latter, then run the script.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from tether.client._async_streams import AsyncStreamClient
from tether.client._channel import (
    CONFIRM,
    INPUT,
    SIGNIN,
    InputResult,
    RpcResponse,
    SigninResult,
    Toolset,
    answer_of,
    checked_requests,
    input_result,
    parsed_response,
    rpc_refusal,
    signin_params,
    signin_results,
)
from tether.client._concurrency import aresolve, asleep
from tether.client._follow import Follower, RunFollower, SessionFollower, next_data_event
from tether.client._http import (
    DEFAULT_LIVENESS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    IDEMPOTENCY_KEY,
    USER_AGENT,
    Backoff,
    api_error,
    connection_error,
    make_auth,
    new_idempotency_key,
    resolve_api_key,
    resolve_base_url,
    retry_delay,
    seg,
    session_error,
    worth_retrying,
)
from tether.client._reconnect import Reconnect
from tether.client._runs import (
    Approve,
    ReadToken,
    content_json,
    tool_error_text,
    tool_verdict,
)
from tether.client._sentinel import DEFAULT
from tether.client._sse import SSEDecoder, SSEEvent
from tether.client.errors import (
    Conflict,
    NotFound,
    ServerError,
    SessionNotFound,
    TetherConnectionError,
    TetherError,
)
from tether.client.events import ClientRequest, Event, ToolApproval
from tether.client.models import PendingRequest, RunResult, Session, SessionSnapshot, ToolCall

ToolHandler = Callable[..., Any]


#: Tools declared for runs: server tools' names, client tools'
#: ``{name, description, parameters}`` definitions.
Tools = list[str | dict[str, Any]]


class AsyncTether:
    """Asynchronous client of a tether server's session API.

    ``base_url`` defaults to ``$TETHER_URL`` or ``http://127.0.0.1:4437``;
    ``api_key`` to ``$TETHER_API_KEY`` (sent as ``Authorization: Bearer``).
    ``first_event_timeout`` and ``idle_timeout`` are the defaults of
    :meth:`Run.stream`; ``reconnect_timeout`` is how long a stream keeps
    trying to reconnect to a server it cannot reach.

    Every call that changes something (create, send, edit, regenerate,
    cancel, tool results and approvals) carries a fresh ``Idempotency-Key``;
    after a cut connection, a timeout or a 5xx it is sent again with the same
    key, up to ``max_retries`` times, so a retry never makes a second turn.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        first_event_timeout: float | None = 30.0,
        idle_timeout: float | None = 60.0,
        reconnect_timeout: float = 60.0,
        liveness_timeout: float = DEFAULT_LIVENESS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        key = resolve_api_key(api_key)
        self._auth = make_auth(key)
        self.timeout = timeout
        self.first_event_timeout = first_event_timeout
        self.idle_timeout = idle_timeout
        self.reconnect_timeout = reconnect_timeout
        self.liveness_timeout = liveness_timeout
        self.max_retries = max_retries
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout, headers={"user-agent": USER_AGENT}
        )
        self.sessions = AsyncSessions(self)
        #: The low-level Durable Streams client, on the same connection pool.
        self.streams = AsyncStreamClient(
            self.base_url, api_key=key, timeout=timeout, http_client=self._http
        )

    def __repr__(self) -> str:
        return f"AsyncTether(base_url={self.base_url!r})"

    # -- plumbing ----------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> httpx.Response:
        """One call; ``session``: the session it is about, named by a 404 for it."""
        url = self.base_url + path
        try:
            resp = await self._http.request(method, url, json=json, params=params, auth=self._auth)
        except httpx.TransportError as err:
            raise connection_error(err, method, url) from err
        if resp.status_code >= 400:
            raise session_error(api_error(resp), session)
        return resp

    async def _mutate(
        self, method: str, path: str, *, json: Any = None, session: str | None = None
    ) -> httpx.Response:
        """A call that changes something: sent with a fresh Idempotency-Key, and sent
        again with the same key (at most ``max_retries`` times, after a backoff) when
        the connection fails or the answer is worth retrying (see ``worth_retrying``)."""
        url = self.base_url + path
        headers = {IDEMPOTENCY_KEY: new_idempotency_key()}
        backoff = Backoff()
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            error = None
            try:
                resp = await self._http.request(
                    method, url, json=json, headers=headers, auth=self._auth
                )
            except httpx.TransportError as err:
                if last:
                    raise connection_error(err, method, url) from err
            else:
                if resp.status_code < 400:
                    return resp
                error = api_error(resp)
                if last or not worth_retrying(error):
                    raise session_error(error, session)
            await asleep(retry_delay(backoff, error))
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the client's connections (unless its ``http_client`` was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncTether:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- inputs --------------------------------------------------------------------

    async def _tail_offset(self, session_id: str) -> str:
        """Where the session's stream ends now: a run started after this is all after it."""
        resp = await self._request(
            "GET",
            f"/v1/stream/sessions/{seg(session_id)}",
            params={"offset": "now"},
            session=session_id,
        )
        return resp.headers.get("stream-next-offset", "-1")

    async def send(
        self,
        session_id: str,
        content: str | list[dict[str, Any]],
        *,
        parent_id: str | None = None,
        interrupt: bool = False,
        tools: Tools | None = None,
    ) -> AsyncRun:
        """Send a user message; returns the handle of the run that answers it.

        ``tools``: tools for this message's run besides the session's (server
        tools' names, client tools' ``{name, description, parameters}``).
        """
        offset = await self._tail_offset(session_id)
        body: dict[str, Any] = {"content": content_json(content), "interrupt": interrupt}
        if parent_id is not None:
            body["parent_id"] = parent_id
        if tools is not None:
            body["tools"] = tools
        data = (
            await self._mutate(
                "POST", f"/v1/sessions/{seg(session_id)}/messages", json=body, session=session_id
            )
        ).json()
        return AsyncRun(
            self, session_id, data["run_id"], message_id=data.get("message_id"),
            queued=bool(data.get("queued")), offset=offset,
        )  # fmt: skip

    async def edit(
        self, session_id: str, message_id: str, content: str | list[dict[str, Any]]
    ) -> AsyncRun:
        """A new version of a user message (a sibling branch), answered afresh."""
        offset = await self._tail_offset(session_id)
        data = (
            await self._mutate(
                "PATCH",
                f"/v1/sessions/{seg(session_id)}/messages/{seg(message_id)}",
                json={"content": content_json(content)},
                session=session_id,
            )
        ).json()
        return AsyncRun(
            self, session_id, data["run_id"], message_id=data.get("message_id"),
            queued=bool(data.get("queued")), offset=offset,
        )  # fmt: skip

    async def regenerate(self, session_id: str, message_id: str) -> AsyncRun:
        """Answer again (``message_id``: the user message, or the answer to replace)."""
        offset = await self._tail_offset(session_id)
        data = (
            await self._mutate(
                "POST",
                f"/v1/sessions/{seg(session_id)}/regenerate",
                json={"message_id": message_id},
                session=session_id,
            )
        ).json()
        return AsyncRun(
            self, session_id, data["run_id"], queued=bool(data.get("queued")), offset=offset
        )

    async def cancel(self, session_id: str, run_id: str | None = None) -> list[str]:
        """Cancel a run (queued or active), or with no run id the active one; returns
        the ids of the runs cancelled."""
        body = {"run_id": run_id} if run_id is not None else {}
        data = (
            await self._mutate(
                "POST", f"/v1/sessions/{seg(session_id)}/cancel", json=body, session=session_id
            )
        ).json()
        return list(data.get("cancelled", []))

    async def server_tools(self) -> list[dict[str, Any]]:
        """The tools the server runs itself, which sessions may declare by name.

        Each is ``{name, description, parameters, approval, source}``.
        """
        data = (await self._request("GET", "/v1/tools")).json()
        return list(data.get("tools", []))

    async def tool_result(
        self, session_id: str, tool_call_id: str, output: Any = None, error: str | None = None
    ) -> None:
        """Answer a tool call: its ``output``, or the ``error`` it raised."""
        await self._mutate(
            "POST",
            f"/v1/sessions/{seg(session_id)}/tool-results",
            json={"tool_call_id": tool_call_id, "output": output, "error": error},
            session=session_id,
        )

    async def tool_approval(
        self,
        session_id: str,
        tool_call_id: str,
        approved: bool,
        reason: str | None = None,
        option_id: str | None = None,
    ) -> None:
        """Approve or refuse a tool call that needs approval.

        ``option_id``: the option chosen, for a call that offers options (an ACP
        agent's permission request: its part's arguments list them).
        """
        body: dict[str, Any] = {"tool_call_id": tool_call_id, "approved": approved}
        body["reason"] = reason
        if option_id is not None:
            body["option_id"] = option_id
        await self._mutate(
            "POST",
            f"/v1/sessions/{seg(session_id)}/tool-approvals",
            json=body,
            session=session_id,
        )

    # -- the client channel ------------------------------------------------------------

    async def respond(
        self,
        session_id: str,
        request_id: str,
        result: Any = None,
        *,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        """Answer a client request of the session, once: its ``result``, or a JSON-RPC
        ``error`` ``{code, message, data?}``. Conflict if it was answered already."""
        body: dict[str, Any] = {"request_id": request_id}
        if error is not None:
            body["error"] = dict(error)
        else:
            body["result"] = result
        await self._mutate(
            "POST", f"/v1/sessions/{seg(session_id)}/client-responses", json=body,
            session=session_id,
        )  # fmt: skip

    async def interact(
        self, session_id: str, requests: Mapping[str, Any] | list[Mapping[str, Any]]
    ) -> AsyncIterator[RpcResponse]:
        """Put JSON-RPC requests (``{id, method, params?}``, one or a list) to the
        session's clients; yields one response per request, in the order answered.

        RpcRequestInvalid (before sending) for a request without an id;
        RpcServerError when the server refuses the call as a whole.
        """
        body = checked_requests(requests)
        url = f"{self.base_url}/v1/sessions/{seg(session_id)}/interact"
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "POST", url, json=body, auth=self._auth, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    raise rpc_refusal(raw) or session_error(api_error(resp, raw), session_id)
                decoder = SSEDecoder()
                async for chunk in resp.aiter_bytes():
                    for msg in decoder.feed(chunk):
                        if isinstance(msg, SSEEvent) and msg.data:
                            yield parsed_response(msg.data)
        except httpx.TransportError as err:
            raise connection_error(err, "POST", url) from err

    async def _ask(self, session_id: str, method: str, params: dict[str, Any]) -> Any:
        """One typed request over ``interact``: its result, or its error raised."""
        async for response in self.interact(
            session_id, {"id": 1, "method": method, "params": params}
        ):
            return response.value()
        raise TetherConnectionError("the interact stream ended without an answer")

    async def signin_toolsets(
        self, session_id: str, toolsets: list[Toolset] | list[dict[str, Any]]
    ) -> dict[str, SigninResult]:
        """Ask the session's user to sign in to ``toolsets``; how it went, per toolset id."""
        return signin_results(await self._ask(session_id, SIGNIN, signin_params(toolsets)))

    async def confirm(self, session_id: str, message: str) -> bool:
        """Ask the session's user a yes/no question."""
        return bool((await self._ask(session_id, CONFIRM, {"message": message}))["confirmed"])

    async def request_input(
        self, session_id: str, message: str, schema: dict[str, Any]
    ) -> InputResult:
        """Ask the session's user for values: ``schema`` is a JSON Schema object of
        primitive properties (as MCP elicitation); an accepted answer matches it."""
        params = {"message": message, "schema": schema}
        return input_result(await self._ask(session_id, INPUT, params))

    async def serve_requests(
        self,
        session_id: str,
        handlers: Mapping[str, Callable[[Any], Any]],
        *,
        limit: int | None = None,
    ) -> int:
        """Answer the session's client requests whose method has a handler, as they come.

        A handler gets the request's params and returns its result (or raises
        RpcError to answer with that error; another exception answers with an
        internal error). Requests pending when it starts are answered first; one
        another client answered first is skipped. Returns the number answered,
        once ``limit`` are (else when the session is deleted).
        """
        snapshot = await self.sessions.get(session_id)
        answered = 0
        pending = [r for r in snapshot.client_requests if r.answerable(snapshot.active_run)]
        for req in pending:
            if req.method in handlers and (limit is None or answered < limit):
                answered += await self._serve(session_id, req, handlers[req.method])
        if limit is not None and answered >= limit:
            return answered
        async for event in self.events(session_id, snapshot.offset):
            if isinstance(event, ClientRequest) and event.method in handlers:
                answered += await self._serve(session_id, event, handlers[event.method])
                if limit is not None and answered >= limit:
                    break
        return answered

    async def _serve(
        self,
        session_id: str,
        request: ClientRequest | PendingRequest,
        handler: Callable[[Any], Any],
    ) -> int:
        """Answer one request with ``handler``: 1, or 0 if another client answered first."""
        failed: Exception | None = None
        outcome: Any = None
        try:
            outcome = await aresolve(handler(request.params))
        except Exception as err:
            failed = err
        answer = answer_of(outcome, failed)
        try:
            await self.respond(
                session_id, request.request_id, answer.get("result"), error=answer.get("error")
            )
        except Conflict:
            return 0
        return 1

    async def read_token(self, session_id: str) -> ReadToken:
        """A short-lived token that lets ``?token=`` read one session (for browsers)."""
        data = (
            await self._request(
                "POST", f"/v1/sessions/{seg(session_id)}/read-token", session=session_id
            )
        ).json()
        return ReadToken(data["token"], data["expires_at"])

    async def models(self) -> list[str]:
        """The ids of the models the server offers."""
        data = (await self._request("GET", "/v1/models")).json()
        return [m["id"] for m in data.get("data", [])]

    # -- following -------------------------------------------------------------------

    def run(
        self,
        session_id: str,
        run_id: str,
        *,
        message_id: str | None = None,
        offset: str | None = None,
    ) -> AsyncRun:
        """A handle on a run this client did not start (from ``offset``, default the
        session's beginning)."""
        return AsyncRun(self, session_id, run_id, message_id=message_id, offset=offset, known=False)

    def attach(self, snapshot: SessionSnapshot) -> AsyncRun | None:
        """A handle on the snapshot's active run (None if none is active), taken
        up where the snapshot stands: its stream yields what came after the
        snapshot, its result includes the answer so far, and ``stream(tools=...,
        approve=...)`` answers the calls it waits for (a suspended run's too)."""
        run = snapshot.active_run
        if run is None:
            return None
        return AsyncRun(
            self, snapshot.id, run.run_id, message_id=run.trigger, offset=snapshot.offset,
            snapshot=snapshot,
        )  # fmt: skip

    def events(self, session_id: str, offset: str | None = None) -> AsyncIterator[Event]:
        """Every event of a session from ``offset`` (default: the beginning), live,
        reconnecting by itself; ends when the session is deleted."""
        follower = SessionFollower(offset, liveness=self.liveness_timeout)
        return self._follow(session_id, follower)

    async def _follow(self, session_id: str, f: Follower) -> AsyncIterator[Event]:
        """The events ``f`` accepts from the session's SSE, across reconnections."""
        url = f"{self.base_url}/v1/sessions/{seg(session_id)}/events"
        policy = Reconnect(self.reconnect_timeout)
        while not f.done:
            f.check()
            rt = f.read_timeout()
            policy.start()
            timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, rt + 1.0), read=rt)
            try:
                async with self._http.stream(
                    "GET", url, params={"offset": f.offset}, auth=self._auth, timeout=timeout,
                    headers={"accept": "text/event-stream", "cache-control": "no-cache"},
                ) as resp:  # fmt: skip
                    if resp.status_code in (404, 410):
                        await resp.aread()
                        try:
                            ended = f.gone()
                        except NotFound:  # never there: name the id the caller gave
                            raise SessionNotFound(session_id) from None
                        for ev in ended:
                            yield ev
                        return
                    if resp.status_code >= 400:
                        raise api_error(resp, await resp.aread())
                    f.connected = True
                    policy.connected()
                    async for ev in self._read_events(session_id, f, resp, rt, policy):
                        yield ev
                        f.touch()
                    if f.done:
                        return
                await self._pause(policy.delay_after_end(), f)
            except httpx.ReadTimeout:
                continue  # silent for the read timeout: check the deadline, reconnect
            except (httpx.TransportError, ServerError) as err:
                delay = policy.delay_after_failure()
                if delay is None:
                    raise connection_error(err, "GET", url) from err
                await self._pause(delay, f)

    async def _read_events(
        self,
        session_id: str,
        f: Follower,
        resp: httpx.Response,
        read_timeout: float,
        policy: Reconnect,
    ) -> AsyncIterator[Event]:
        """The events of one SSE response, until the follower is done or, its
        read timeout being too long for a deadline that is near, it must reconnect."""
        decoder = SSEDecoder()
        async for chunk in resp.aiter_bytes():
            msgs = decoder.feed(chunk)
            for i, msg in enumerate(msgs):
                if not isinstance(msg, SSEEvent):
                    continue
                events = f.accept(msg)
                if f.lookahead is not None:
                    following = next_data_event(msgs, i + 1)
                    if following is False:
                        events += await self._lookahead(session_id, f)
                    else:
                        events += f.resolve_lookahead(following)  # type: ignore[arg-type]
                for ev in events:
                    policy.progressed()
                    yield ev
                if f.done:
                    return
            f.check()
            if f.should_reconnect(read_timeout):
                policy.cut()
                return

    async def _pause(self, delay: float, f: Follower) -> None:
        """Wait ``delay`` seconds, but no later than the follower's next deadline."""
        if not delay:
            return
        found = f.deadline()
        if found is not None:
            delay = min(delay, max(found[0] - time.monotonic(), 0.0))
        await asleep(delay)

    async def _lookahead(self, session_id: str, f: Follower) -> list[Event]:
        """Read the one event after a queue-update to see whether the run started."""
        assert f.lookahead is not None
        try:
            resp = await self._http.get(
                f"{self.base_url}/v1/stream/sessions/{seg(session_id)}",
                params={"offset": f.lookahead},
                auth=self._auth,
            )
        except httpx.TransportError:
            f.lookahead = None
            return []
        if resp.status_code in (404, 410):
            return f.gone()
        if resp.status_code >= 400:
            f.lookahead = None
            return []
        items = resp.json()
        return f.resolve_lookahead(items[0] if items else None)


class AsyncSessions:
    """``client.sessions``: create, list, get, update, archive, delete."""

    def __init__(self, client: AsyncTether) -> None:
        self._client = client

    async def create(
        self,
        model: str | None = None,
        agent: str | None = None,
        system: str | None = None,
        title: str | None = None,
        tools: Tools | None = None,
    ) -> Session:
        """A new session; ``tools`` are what its runs may call (see :meth:`AsyncTether.send`)."""
        body = {"model": model, "agent": agent, "system": system, "title": title, "tools": tools}
        data = (await self._client._mutate("POST", "/v1/sessions", json=body)).json()
        return Session.from_json(data)

    async def list(self, *, archived: bool = False, gateway: bool = False) -> list[Session]:
        """Every session of the caller, latest update first (the server's pages, followed).

        Archived ones only with ``archived``; those the OpenAI-compatible
        gateway made only with ``gateway``.
        """
        params: dict[str, str] = {"archived": "true"} if archived else {}
        if gateway:
            params["gateway"] = "true"
        sessions: list[Session] = []
        while True:
            data = (await self._client._request("GET", "/v1/sessions", params=params)).json()
            sessions += [Session.from_json(s) for s in data.get("sessions", [])]
            if not data.get("next_cursor"):
                return sessions
            params["cursor"] = data["next_cursor"]

    async def get(self, session_id: str) -> SessionSnapshot:
        data = (
            await self._client._request(
                "GET", f"/v1/sessions/{seg(session_id)}", session=session_id
            )
        ).json()
        return SessionSnapshot.from_json(data)

    async def update(
        self,
        session_id: str,
        *,
        title: str | None = None,
        archived: bool | None = None,
        tools: Tools | None = None,
    ) -> Session:
        """Change what is given; ``tools`` replaces the session's (``[]``: none)."""
        body = {"title": title, "archived": archived, "tools": tools}
        data = (
            await self._client._request(
                "PATCH", f"/v1/sessions/{seg(session_id)}", json=body, session=session_id
            )
        ).json()
        return Session.from_json(data)

    async def archive(self, session_id: str) -> Session:
        data = (
            await self._client._request(
                "POST", f"/v1/sessions/{seg(session_id)}/archive", session=session_id
            )
        ).json()
        return Session.from_json(data)

    async def delete(self, session_id: str) -> None:
        await self._client._request("DELETE", f"/v1/sessions/{seg(session_id)}", session=session_id)


class AsyncRun:
    """A run: the answer to one message (or one regenerate).

    :meth:`stream` yields the run's events, exactly once each, reconnecting by
    itself; :meth:`text` and :meth:`result` wait for the run's end.
    """

    def __init__(
        self,
        client: AsyncTether,
        session_id: str,
        run_id: str,
        *,
        message_id: str | None = None,
        queued: bool = False,
        offset: str | None = None,
        known: bool = True,
        snapshot: SessionSnapshot | None = None,
    ) -> None:
        self.session_id = session_id
        self.run_id = run_id
        #: The user message the run answers (None for a regenerate).
        self.message_id = message_id
        #: The run waited behind another when it was submitted.
        self.queued = queued
        #: Offset the run's events are read from (the session's end before it was sent).
        self.start_offset = offset
        self._client = client
        self._known = known
        #: Where the run is taken up (see ``AsyncTether.attach``).
        self._snapshot = snapshot
        self._follower: RunFollower | None = None

    def __repr__(self) -> str:
        return (
            f"AsyncRun(session_id={self.session_id!r}, run_id={self.run_id!r}, "
            f"message_id={self.message_id!r}, queued={self.queued!r})"
        )

    @property
    def done(self) -> bool:
        """The run's end has been seen."""
        return self._follower is not None and self._follower.done

    @property
    def offset(self) -> str | None:
        """Offset after the last event processed (resume from here)."""
        return self._follower.offset if self._follower is not None else self.start_offset

    async def stream(
        self,
        *,
        offset: str | None = None,
        tools: Mapping[str, ToolHandler] | None = None,
        approve: Approve | None = None,
        first_event_timeout: float | None = DEFAULT,
        idle_timeout: float | None = DEFAULT,
    ) -> AsyncIterator[Event]:
        """The run's events, in order, each once, until its ``run-end``.

        Reads the session's events from where the run's handle stands (the
        offset before the run was sent, or ``offset``), and reconnects from the
        last event processed whenever the connection drops, with a small
        backoff. Called again, it continues where the last call stopped; once
        the run has ended it yields nothing.

        Timeouts (None disables one):

        - ``first_event_timeout`` (default 30 s): the run's first event must
          arrive within this. While the run waits in the queue, any event of
          the session (the run ahead of it progressing) restarts the clock.
          Raises :class:`FirstEventTimeout`.
        - ``idle_timeout`` (default 60 s): after the first event, the longest
          time without an event of the session. It is stopped while the run
          waits for a tool result or approval (status ``paused``, or a
          ``run-suspend``: the run is suspended on the server, holding no task,
          for as long as nobody answers, across server restarts); it runs
          again once the run resumes (``run-resume``, then status
          ``running``). A waiting run is followed until its one ``run-end``,
          however long it waits: no timeout ends it and no end is made up
          for it. Raises :class:`IdleTimeout`.

        Heartbeats count as liveness, not as events: they keep a connection
        from being judged dead (nothing at all for ``liveness_timeout``, 45 s,
        means reconnect), but they do not hold off the timeouts above, since a
        healthy connection to a run that makes no progress is what they are
        for. Time the caller spends between events (and in tool handlers) is
        not counted.

        If the session disappears (404/410) before the run's end, a
        ``RunEnd(reason="interrupted", synthesized=True)`` ends the stream; a
        run dropped from the queue without running ends with a synthesized
        ``RunEnd`` too ("cancelled" if a cancel named it).

        ``tools`` maps tool names to handlers, called with the call's
        arguments as keyword arguments (a non-dict argument value is passed
        positionally); the return value is sent as the result, an exception
        as the error. ``approve`` answers calls that need approval: True,
        False, or a function of the :class:`ToolCall` returning a bool or
        ``(bool, reason)``; without it such calls are left to someone else and
        handled once approved.

        Leaving the ``async for`` early leaves the connection to the garbage
        collector; wrap the call in ``contextlib.aclosing`` to close it at once.
        """
        f = self._prepare(offset, first_event_timeout, idle_timeout)
        handlers = dict(tools or {})
        awaiting: dict[str, ToolCall] = {}
        if handlers or approve is not None:
            for call in f.take_tool_calls():  # what an attached run already waits for
                await self._answer(call, handlers, approve, awaiting)
        async for ev in self._client._follow(self.session_id, f):
            if handlers or approve is not None:
                for call in f.take_tool_calls():
                    await self._answer(call, handlers, approve, awaiting)
                if isinstance(ev, ToolApproval) and ev.tool_call_id in awaiting:
                    call = awaiting.pop(ev.tool_call_id)
                    if ev.approved:
                        await self._run_tool(call, handlers)
            yield ev

    def _prepare(
        self, offset: str | None, first_event_timeout: float | None, idle_timeout: float | None
    ) -> RunFollower:
        c = self._client
        first = c.first_event_timeout if first_event_timeout is DEFAULT else first_event_timeout
        idle = c.idle_timeout if idle_timeout is DEFAULT else idle_timeout
        f = self._follower
        if f is None or offset is not None:
            f = self._follower = RunFollower(
                self.run_id, self.message_id, offset or self.start_offset,
                queued=self.queued, known=self._known, first_event_timeout=first,
                idle_timeout=idle, liveness=c.liveness_timeout,
            )  # fmt: skip
            if self._snapshot is not None and offset is None:
                f.attach(self._snapshot)
        else:
            f.first_event_timeout = first
            f.idle_timeout = idle
            f.touch()
        return f

    async def _answer(
        self,
        call: ToolCall,
        handlers: Mapping[str, ToolHandler],
        approve: Approve | None,
        awaiting: dict[str, ToolCall],
    ) -> None:
        if call.needs_approval:
            if approve is None:
                if call.name in handlers:
                    awaiting[call.id] = call
                return
            verdict = await aresolve(approve(call) if callable(approve) else approve)
            approved, reason = tool_verdict(verdict)
            with contextlib.suppress(Conflict):
                await self.tool_approval(call.id, approved, reason)
            if not approved:
                return
        await self._run_tool(call, handlers)

    async def _run_tool(self, call: ToolCall, handlers: Mapping[str, ToolHandler]) -> None:
        fn = handlers.get(call.name)
        if fn is None:
            return
        try:
            output = await aresolve(
                fn(**call.arguments) if isinstance(call.arguments, dict) else fn(call.arguments)
            )
        except Exception as err:
            with contextlib.suppress(Conflict):
                await self.tool_result(call.id, error=tool_error_text(err))
            return
        with contextlib.suppress(Conflict):
            await self.tool_result(call.id, output=output)

    async def result(self, **kwargs: Any) -> RunResult:
        """Wait for the run's end (streaming what is left) and return its outcome.

        Takes the keyword arguments of :meth:`stream`.
        """
        async for _ in self.stream(**kwargs):
            pass
        assert self._follower is not None
        return self._follower.state.result()

    async def text(self, **kwargs: Any) -> str:
        """Wait for the run's end and return its assistant message's final text."""
        return (await self.result(**kwargs)).text

    async def cancel(self) -> bool:
        """Cancel this run (queued or active); False if it was not running or queued."""
        return self.run_id in await self._client.cancel(self.session_id, self.run_id)

    async def tool_result(
        self, tool_call_id: str, output: Any = None, error: str | None = None
    ) -> None:
        await self._client.tool_result(self.session_id, tool_call_id, output, error)

    async def tool_approval(
        self, tool_call_id: str, approved: bool, reason: str | None = None
    ) -> None:
        await self._client.tool_approval(self.session_id, tool_call_id, approved, reason)


__all__ = ["AsyncRun", "AsyncSessions", "AsyncTether", "TetherError"]
