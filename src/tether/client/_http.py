"""Plumbing shared by the sync and async clients: configuration, auth, errors, backoff."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Generator
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tether.client.errors import (
    APIError,
    NotFound,
    SessionNotFound,
    TetherConnectionError,
    error_for,
)

DEFAULT_URL = "http://127.0.0.1:4437"
DEFAULT_TIMEOUT = 30.0
#: Nothing at all (not even a heartbeat, which the server sends every 15 s) for
#: this long means the connection is dead: it is dropped and made again.
DEFAULT_LIVENESS = 45.0
USER_AGENT = "tether-python"
#: Times a mutating call is sent again after a cut connection or a 5xx (its
#: Idempotency-Key makes that safe): five sends at most.
DEFAULT_MAX_RETRIES = 4
IDEMPOTENCY_KEY = "Idempotency-Key"
#: Longest wait before a retry that a server's ``Retry-After`` may ask for.
MAX_RETRY_AFTER = 5.0


def resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("TETHER_URL") or DEFAULT_URL
    return url.rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    key = api_key if api_key is not None else os.environ.get("TETHER_API_KEY")
    return key or None


def redact_url(url: str) -> str:
    """A URL fit for messages: no userinfo, no ``token`` query value."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        "token=<redacted>" if q.startswith("token=") else q for q in parts.query.split("&") if q
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


class BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer``; its repr never shows the key."""

    __slots__ = ("_header",)

    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"


def make_auth(key: str | None) -> httpx.Auth | None:
    return BearerAuth(key) if key else None


def new_idempotency_key() -> str:
    """A fresh key for one mutating call; its retries send the same one."""
    return str(uuid.uuid4())


def worth_retrying(err: APIError) -> bool:
    """An error answer after which a mutating call is sent again with the same key.

    A server or proxy that could not take it for now (502, 503, 504, 507:
    nothing was kept), or a 409 saying the first send is still being processed
    (the retry then gets its answer). Not a 500: what a failure left is unknown.
    """
    return err.status in (502, 503, 504, 507) or err.code == "idempotency_in_progress"


def retry_delay(backoff: Backoff, err: APIError | None) -> float:
    """Seconds to wait before a retry: the backoff's, or longer if ``Retry-After`` asks."""
    delay = backoff.next()
    asked = err.headers.get("retry-after", "") if err is not None else ""
    try:
        return max(delay, min(float(asked), MAX_RETRY_AFTER)) if asked else delay
    except ValueError:
        return delay


def api_error(response: httpx.Response, body: bytes | None = None) -> APIError:
    request = response.request
    return error_for(
        response.status_code,
        response.content if body is None else body,
        dict(response.headers),
        method=request.method,
        url=redact_url(str(request.url)),
    )


#: How the server's 404s about a session itself begin (the session routes', and
#: its event stream's for a key that cannot see it); other 404s (an attachment,
#: a message) are about something in the session.
_SESSION_MISSING = ("session not found", "stream not found: sessions/")


def session_error(err: APIError, session_id: str | None) -> APIError:
    """A 404 about the session ``session_id`` itself as :class:`SessionNotFound`,
    which names the id the caller gave instead of a server route."""
    if (
        session_id is not None
        and type(err) is NotFound
        and err.message.startswith(_SESSION_MISSING)
    ):
        return SessionNotFound(session_id)
    return err


def connection_error(err: Exception, method: str, url: str) -> TetherConnectionError:
    detail = type(err).__name__
    text = str(err)
    if text:
        detail += f": {text}"
    out = TetherConnectionError(f"{method} {redact_url(url)} failed: {detail}")
    out.__cause__ = err
    return out


class Backoff:
    """Exponential backoff with jitter: 50 ms doubling up to ``cap``; reset on success."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.attempt = 0
