"""The front door: what every request passes before any route sees it.

Browsers are the reason for most of it. Without keys, tether trusts whoever
can reach its port, and any web page the user visits can send requests to a
loopback port. So, without ``TETHER_API_KEYS``:

- only Host headers naming this server (loopback names, the bound address,
  ``--allowed-hosts``) are answered, so a DNS-rebinding page is refused;
- a request from a page of another origin (its ``Origin`` header) is refused
  unless ``--cors-origins`` lists that origin;
- JSON routes take only JSON bodies, so a page cannot smuggle a request in as
  a CORS "simple request" (``text/plain``, a form).

With keys a page needs a key to do anything, and CORS is what
``--cors-origins`` says (by default any origin). Every route gets the same
CORS headers and preflight answers.

For every request: a declared body larger than ``--max-body`` is refused
before anything reads it, and with keys each key may make ``--rate-limit``
requests a second (429 with ``Retry-After`` past it).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

import orjson

from tether.api.auth import Auth, Unauthorized
from tether.api.ratelimit import RateLimiter
from tether.streams.app import Message, Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})
#: Host values whose verdict is remembered: a server sees a few (each client sends the
#: same one on every request); past this many, new ones are judged every time.
_HOSTS_REMEMBERED = 64
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ALLOW_METHODS = b"GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS"
_ALLOW_HEADERS = (
    b"Content-Type, Authorization, Last-Event-ID, If-None-Match, Stream-TTL, Stream-Expires-At, "
    b"Stream-Seq, Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, "
    b"Producer-Id, Producer-Epoch, Producer-Seq, Idempotency-Key"
)
_EXPOSE = (
    b"Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    b"Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    b"Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Content-Type, Retry-After, "
    b"X-Tether-Session-Id, X-Tether-Run-Id, X-Tether-Stream-Url, X-Vercel-AI-UI-Message-Stream, "
    b"Idempotent-Replayed"
)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    #: Origins whose pages may call tether ("*": any). None: any with keys, none without.
    cors_origins: tuple[str, ...] | None = None
    #: Host names answered without keys besides loopback and the bound address.
    allowed_hosts: tuple[str, ...] = ()
    #: The address the server listens on.
    bind_host: str = "127.0.0.1"
    max_body: int = 10 * 1024 * 1024
    #: With keys: requests a second per key (0: no limit), and how many may come at once.
    rate_limit: float = 0.0
    rate_burst: int = 0


class Guard:
    """ASGI middleware in front of the whole app; see the module docstring."""

    def __init__(self, app: ASGIApp, auth: Auth, config: GuardConfig, streams_prefix: str):
        self.app = app
        self.auth = auth
        self.config = config
        self._streams = streams_prefix
        self._keys = auth.enabled
        origins = config.cors_origins
        if origins is None:
            origins = ("*",) if auth.enabled else ()
        self._any_origin = "*" in origins
        self._origins = frozenset(o.rstrip("/").lower() for o in origins if o != "*")
        self._hosts = (
            LOOPBACK | {config.bind_host.lower()} | {h.lower() for h in config.allowed_hosts}
        )
        self._any_ip = config.bind_host in _ANY_ADDRESS
        #: Raw Host header -> whether it names this server (see _HOSTS_REMEMBERED).
        self._host_verdicts: dict[bytes, bool] = {}
        self._rate = (
            RateLimiter(config.rate_limit, max(config.rate_burst, 1))
            if auth.enabled and config.rate_limit > 0
            else None
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The app's own awaitable when the request passes unchanged (most do), so
        the request's coroutine chain has no frame of the guard's to resume."""
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return self.app(scope, receive, send)
        host, origin, content_type, length, authorization, preflight, chunked = _heads(
            scope["headers"]
        )
        has_body = chunked or (length is not None and length != b"0")
        refusal = self._refusal(scope, host, origin, content_type, has_body, length, authorization)
        if refusal is not None:
            status, code, message, extra = refusal
            return _refuse(scope, send, status, code, message, extra)
        cors = self._cors_headers(origin, host) if origin is not None else None
        if kind == "http" and preflight is not None and scope["method"] == "OPTIONS":
            return _preflight(scope, send, cors)
        if cors is None or kind != "http":
            return self.app(scope, receive, send)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors]
            await send(message)

        return self.app(scope, receive, send_with_cors)

    def _refusal(
        self,
        scope: Scope,
        host: bytes | None,
        origin: bytes | None,
        content_type: bytes | None,
        has_body: bool,
        length: bytes | None,
        authorization: bytes | None,
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """Why this request is not let in (status, code, message, headers), or None."""
        method = scope.get("method", "GET")
        if not self._keys:
            if host is not None and not self._host_ok(host):
                return (400, "invalid_host", _host_message(host.decode("latin-1")), [])
            if (
                origin is not None
                and method != "OPTIONS"
                and not self._origin_allowed(origin, host)
            ):
                return (403, "forbidden_origin", _ORIGIN_MESSAGE, [])
            json_route = not scope["path"].startswith(self._streams)
            if has_body and method in _BODY_METHODS and json_route and not _is_json(content_type):
                return (415, "unsupported_media_type", _JSON_MESSAGE, [])
        if length is not None and length.isdigit() and int(length) > self.config.max_body:
            message = f"request body is larger than {self.config.max_body} bytes"
            return (413, "too_large", message, [])
        if self._rate is not None:
            identity = self._identity(scope, authorization)
            if identity is not None:
                wait = self._rate.take(identity)
                if wait > 0:
                    retry = str(max(1, math.ceil(wait))).encode()
                    message = f"too many requests for this key; retry in {retry.decode()} s"
                    return (429, "rate_limited", message, [(b"retry-after", retry)])
        return None

    def _host_ok(self, host: bytes) -> bool:
        """``_host_allowed``, remembered per raw header value (it is asked on every request)."""
        ok = self._host_verdicts.get(host)
        if ok is None:
            ok = self._host_allowed(host.decode("latin-1"))
            if len(self._host_verdicts) < _HOSTS_REMEMBERED:
                self._host_verdicts[host] = ok
        return ok

    def _host_allowed(self, host: str) -> bool:
        name = _hostname(host)
        if name in self._hosts or name.endswith(".localhost"):
            return True
        if self._any_ip:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False

    def _origin_allowed(self, origin: bytes, host: bytes | None) -> bool:
        text = origin.decode("latin-1").lower()
        if self._any_origin or text in self._origins:
            return True
        _, sep, netloc = text.partition("://")
        return bool(sep) and host is not None and netloc == host.decode("latin-1").lower()

    def _cors_headers(self, origin: bytes, host: bytes | None) -> list[tuple[bytes, bytes]] | None:
        """CORS headers for a response to ``origin``, or None when it is not allowed one."""
        if self._any_origin:
            return [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-expose-headers", _EXPOSE),
            ]
        if origin.decode("latin-1").lower() in self._origins:
            return [
                (b"access-control-allow-origin", origin),
                (b"vary", b"Origin"),
                (b"access-control-expose-headers", _EXPOSE),
            ]
        return None

    def _identity(self, scope: Scope, authorization: bytes | None) -> str | None:
        token = None
        if authorization is None:
            query = scope.get("query_string", b"")
            if b"token=" not in query:
                return None
            token = parse_qs(query.decode("latin-1")).get("token", [None])[0]
        try:
            caller = self.auth.caller(
                authorization.decode("latin-1") if authorization is not None else None, token
            )
        except Unauthorized:
            return None  # the route answers 401
        return caller.owner


_ORIGIN_MESSAGE = (
    "requests from web pages of other origins are refused without TETHER_API_KEYS; "
    "allow an origin with --cors-origins"
)
_JSON_MESSAGE = "this route takes a JSON body: send Content-Type: application/json"


def _host_message(host: str) -> str:
    return (
        f"Host {host!r} is not this server's address; without TETHER_API_KEYS only "
        "loopback names and the bound address are answered (add names with --allowed-hosts)"
    )


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


async def _preflight(scope: Scope, send: Send, cors: list[tuple[bytes, bytes]] | None) -> None:
    requested = None
    for name, value in scope["headers"]:
        if name == b"access-control-request-headers":
            requested = value
    headers = [
        (b"access-control-allow-methods", _ALLOW_METHODS),
        (b"access-control-allow-headers", requested or _ALLOW_HEADERS),
        (b"access-control-max-age", b"86400"),
        *(cors or ()),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _heads(
    headers: list[tuple[bytes, bytes]],
) -> tuple[
    bytes | None, bytes | None, bytes | None, bytes | None, bytes | None, bytes | None, bool
]:
    """(host, origin, content-type, content-length, authorization, preflight method, chunked).

    The key of an ``x-api-key`` header counts as ``Authorization: Bearer <key>``
    (when there is no Authorization header), as the gateway takes it.
    """
    host = origin = content_type = length = authorization = preflight = None
    chunked = False
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"origin":
            origin = value
        elif name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value
        elif name == b"authorization":
            authorization = value
        elif name == b"x-api-key" and authorization is None:  # Anthropic's clients' key
            authorization = b"Bearer " + value
        elif name == b"access-control-request-method":
            preflight = value
        elif name == b"transfer-encoding":
            chunked = True
    return host, origin, content_type, length, authorization, preflight, chunked


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    if scope["type"] == "websocket":
        # Before the handshake is accepted, a close is an HTTP 403 to the client.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = (
        b""
        if scope.get("method") == "HEAD"
        else orjson.dumps(
            {"error": {"code": code, "message": message, "type": "invalid_request_error"}}
        )
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
