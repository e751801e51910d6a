"""The reserved ``__ds`` control routes (PROTOCOL.md sections 6 and 7), as plain ASGI.

The streams app hands every request whose stream path starts with ``__ds``
here, before its own routes and before its authorize hook:

    GET    __ds/jwks.json                          the webhook signing keys (public)
    PUT    __ds/subscriptions/:id                  create or re-confirm
    GET    __ds/subscriptions/:id
    DELETE __ds/subscriptions/:id                  tombstone
    POST   __ds/subscriptions/:id/streams          add explicit links
    DELETE __ds/subscriptions/:id/streams/:path    remove an explicit link
    POST   __ds/subscriptions/:id/claim            pull-wake: take the lease
    POST   __ds/subscriptions/:id/ack              pull-wake: heartbeat or done
    POST   __ds/subscriptions/:id/release          pull-wake: give the wake up
    POST   __ds/subscriptions/:id/callback         webhook: heartbeat or done

Callback, ack and release are authorized by the wake's bearer token alone
(a worker or a webhook receiver need not hold an API key); the others by the
caller's key, whose namespace holds the subscription, its streams and its wake
stream, exactly as for streams.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tether.streams.body import ClientGone, read_body
from tether.streams.http_errors import HTTPError
from tether.streams.wire import WireError, parse_offset, request_origin
from tether.subscriptions.config import (
    WEBHOOK,
    BadConfig,
    check_stream_name,
    parse_config,
    parse_stream_list,
)
from tether.subscriptions.service import (
    BadStream,
    ConfigConflict,
    NotFound,
    SubscriptionService,
    Unavailable,
    token_subscription,
)
from tether.subscriptions.state import AlreadyClaimed, BadAck, Fenced, Subscription
from tether.subscriptions.url_policy import WebhookUrlRejected

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CONTROL = "__ds"
MAX_BODY = 1024 * 1024
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


@dataclass(frozen=True, slots=True)
class Namespace:
    """Who is asking, as far as subscriptions care."""

    owner: str | None
    #: Prepended to the caller's stream names in the store.
    prefix: str
    #: The store path of a stream the caller names and may read (HTTPError 404 if not).
    readable_path: Callable[[str], Awaitable[str]]


#: The caller of a request (HTTPError 401/404 to refuse); the layer above decides.
Identify = Callable[[Scope, dict[str, str]], Awaitable[Namespace]]


async def _whole_store(scope: Scope, headers: dict[str, str]) -> Namespace:
    async def same(name: str) -> str:
        return name

    return Namespace(None, "", same)


class SubscriptionRoutes:
    def __init__(
        self, service: SubscriptionService, prefix: str, identify: Identify | None = None
    ) -> None:
        self.service = service
        #: The streams' URL prefix, e.g. ``/v1/stream/``.
        self.prefix = prefix
        self.identify = identify or _whole_store

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, headers: dict[str, str]
    ) -> None:
        """Answer one control request (``name``: the path after the streams prefix)."""
        try:
            await self._route(scope, receive, send, name, headers)
        except HTTPError as err:
            await _send_json(send, err.status, _error(err.code, str(err)), err.headers)
        except WireError as err:
            await _send_json(send, err.status, _error(err.code, str(err)))
        except ClientGone:
            return

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, name: str, h: dict[str, str]
    ) -> None:
        method = scope["method"]
        parts = name.split("/")
        if parts == [CONTROL, "jwks.json"] and method in ("GET", "HEAD"):
            await self._jwks(send)
            return
        if len(parts) < 3 or parts[1] != "subscriptions" or not _valid_id(parts[2]):
            raise HTTPError(404, "not_found", f"no control API at {name}")
        sub_id, rest = parts[2], parts[3:]
        if rest in (["ack"], ["release"], ["callback"]) and method == "POST":
            await self._by_token(scope, receive, send, sub_id, rest[0], h)
            return
        ns = await self.identify(scope, h)
        key = ns.prefix + f"{CONTROL}/subscriptions/{sub_id}"
        if not rest:
            if method == "PUT":
                await self._put(scope, receive, send, ns, key, sub_id, h)
            elif method in ("GET", "HEAD"):
                sub = await self._get(key)
                await _send_json(send, 200, await self._describe(scope, sub))
            elif method == "DELETE":
                await self._call(self.service.delete(key))
                await _send_json(send, 204, None)
            else:
                raise _not_allowed(method, b"GET, PUT, DELETE")
        elif rest == ["streams"] and method == "POST":
            doc = await _json_body(receive, h)
            if not isinstance(doc, dict) or set(doc) != {"streams"}:
                raise HTTPError(400, "bad_request", 'the body must be {"streams": [paths]}')
            paths = [
                await ns.readable_path(n)
                for n in _config(parse_stream_list, doc["streams"], "streams")
            ]
            await self._call(self.service.add_streams(key, paths))
            await _send_json(send, 204, None)
        elif rest[:1] == ["streams"] and len(rest) > 1 and method == "DELETE":
            stream = _config(check_stream_name, "/".join(rest[1:]), "path")
            path = stream if stream.startswith("sessions/") else ns.prefix + stream
            await self._call(self.service.remove_stream(key, path))
            await _send_json(send, 204, None)
        elif rest == ["claim"] and method == "POST":
            await self._claim(receive, send, key, h)
        else:
            raise HTTPError(404, "not_found", f"no control API at {name} for {method}")

    # -- configuration ---------------------------------------------------------

    async def _put(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ns: Namespace,
        key: str,
        sub_id: str,
        h: dict[str, str],
    ) -> None:
        body = await read_body(receive, h, MAX_BODY)
        config = _config(parse_config, body)
        for stream in config.streams:
            await ns.readable_path(stream)  # 404 for a session the caller does not own
        try:
            sub, created = await self.service.put(
                key, sub_id, config, owner=ns.owner, prefix=ns.prefix,
                base_url=self._base_url(scope),
            )  # fmt: skip
        except WebhookUrlRejected as err:
            raise HTTPError(400, "WEBHOOK_URL_REJECTED", str(err)) from None
        except BadStream as err:
            raise HTTPError(400, "bad_request", str(err)) from None
        except ConfigConflict as err:
            raise HTTPError(409, "conflict", str(err)) from None
        except Unavailable as err:
            raise HTTPError(503, "unavailable", str(err)) from None
        await _send_json(send, 201 if created else 200, await self._describe(scope, sub))

    async def _get(self, key: str) -> Subscription:
        try:
            return await self.service.get(key)
        except NotFound:
            raise HTTPError(404, "not_found", "subscription not found") from None

    async def _call(self, work: Awaitable[None]) -> None:
        try:
            await work
        except NotFound:
            raise HTTPError(404, "not_found", "subscription not found") from None
        except Unavailable as err:
            raise HTTPError(503, "unavailable", str(err)) from None

    async def _describe(self, scope: Scope, sub: Subscription) -> dict[str, Any]:
        config = sub.config
        webhook: dict[str, Any] | None = None
        if config.webhook_url is not None:
            webhook = {"url": config.webhook_url}
            if config.type == WEBHOOK and self.service.keyring is not None:
                webhook["signing"] = {
                    "alg": "ed25519",
                    "kid": self.service.keyring.active_kid,
                    "jwks_url": f"{self._base_url(scope)}{CONTROL}/jwks.json",
                }
        doc: dict[str, Any] = {
            "id": sub.id,
            "subscription_id": sub.id,
            "type": config.type,
            "pattern": config.pattern,
            "streams": self.service.stream_entries(sub, {}),
            "webhook": webhook,
            "wake_stream": config.wake_stream,
            "lease_ttl_ms": config.lease_ttl_ms,
            "created_at": _iso(sub.created_at),
            "status": sub.status,
            "description": config.description,
            "generation": sub.generation,
        }
        if sub.next_attempt_at is not None:
            doc["next_attempt_at"] = _iso(sub.next_attempt_at)
        return doc

    async def _jwks(self, send: Send) -> None:
        if self.service.keyring is None:
            raise HTTPError(503, "unavailable", "the signing keys are not loaded yet")
        body = orjson.dumps(self.service.keyring.jwks())
        headers = [
            (b"content-type", b"application/jwk-set+json"),
            (b"cache-control", b"public, max-age=300"),
        ]
        await _send(send, 200, headers, body)

    # -- delivery --------------------------------------------------------------

    async def _claim(self, receive: Receive, send: Send, key: str, h: dict[str, str]) -> None:
        doc = await _json_body(receive, h)
        worker = doc.get("worker") if isinstance(doc, dict) else None
        if not isinstance(worker, str) or not worker or len(worker) > 256:
            raise HTTPError(400, "bad_request", 'the body must be {"worker": "<name>"}')
        sub = await self._get(key)
        if sub.config.type != "pull-wake":
            raise HTTPError(409, "conflict", "only a pull-wake subscription is claimed")
        try:
            claimed = await self.service.claim(key, worker)
        except AlreadyClaimed as err:
            body = {
                "error": {
                    "code": "ALREADY_CLAIMED",
                    "message": "another worker holds this subscription's lease",
                    "current_holder": err.holder,
                    "generation": err.generation,
                }
            }
            await _send_json(send, 409, body)
            return
        except NotFound:
            raise HTTPError(404, "not_found", "subscription not found") from None
        except Unavailable as err:
            raise HTTPError(503, "unavailable", str(err)) from None
        wake = claimed.wake
        await _send_json(
            send,
            200,
            {
                "wake_id": wake.id,
                "generation": wake.generation,
                "token": claimed.token,
                "streams": self.service.stream_entries(claimed.sub, claimed.tails),
                "lease_ttl_ms": claimed.sub.lease_ms,
            },
        )

    async def _by_token(
        self, scope: Scope, receive: Receive, send: Send, sub_id: str, op: str, h: dict[str, str]
    ) -> None:
        auth = h.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPError(
                401, "unauthorized", f"{op} needs the wake's token: Authorization: Bearer <token>",
                [(b"www-authenticate", b"Bearer")],
            )  # fmt: skip
        token = token.strip()
        doc = await _json_body(receive, h)
        if not isinstance(doc, dict):
            raise HTTPError(400, "bad_request", "the body must be a JSON object")
        key = token_subscription(token)
        if key is None or not key.endswith(f"/subscriptions/{sub_id}"):
            await _send_json(send, 409, _error("FENCED", "the token is not this wake's"))
            return
        wake_id, generation = doc.get("wake_id"), doc.get("generation")
        try:
            if op == "release":
                await self.service.release(key, token, wake_id, generation)
                await _send_json(send, 204, None)
                return
            done = doc.get("done", False)
            if not isinstance(done, bool):
                raise HTTPError(400, "bad_request", "done must be true or false")
            acks = _acks(doc.get("acks", []))
            next_wake = await self.service.ack(key, token, wake_id, generation, acks, done)
        except Fenced:
            body = _error("FENCED", "this wake is over or was never this token's")
            await _send_json(send, 409, body)
            return
        except BadAck as err:
            raise HTTPError(400, "bad_request", str(err)) from None
        except Unavailable as err:
            raise HTTPError(503, "unavailable", str(err)) from None
        await _send_json(send, 200, {"ok": True, "next_wake": next_wake})

    def _base_url(self, scope: Scope) -> str:
        return request_origin(scope) + self.prefix


def _valid_id(sub_id: str) -> bool:
    return 0 < len(sub_id) <= 256 and all(c.isprintable() and c != "/" for c in sub_id)


def _config(parse: Callable[..., Any], *args: Any) -> Any:
    try:
        return parse(*args)
    except BadConfig as err:
        raise HTTPError(400, "bad_request", str(err)) from None


def _acks(raw: object) -> list[tuple[str, int]]:
    if not isinstance(raw, list):
        raise HTTPError(400, "bad_request", "acks must be a list of {stream, offset}")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("offset"), str):
            raise HTTPError(400, "bad_request", "each ack is {stream, offset}")
        stream = _config(check_stream_name, item.get("stream"), "acks[].stream")
        pos = parse_offset(item["offset"])
        if pos is None:
            raise HTTPError(400, "bad_request", "an ack needs an offset, not 'now'")
        out.append((stream, pos))
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _not_allowed(method: str, allow: bytes) -> HTTPError:
    return HTTPError(405, "method_not_allowed", f"{method} is not supported here",
                     [(b"allow", allow)])  # fmt: skip


async def _json_body(receive: Receive, h: dict[str, str]) -> Any:
    body = await read_body(receive, h, MAX_BODY)
    if not body:
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPError(400, "bad_request", "the body must be JSON") from None


async def _send_json(
    send: Send, status: int, doc: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = b"" if status == 204 else orjson.dumps(doc)
    await _send(send, status, [*_JSON, *(extra or [])], body)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status != 204:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
