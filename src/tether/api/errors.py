"""Errors over HTTP: each wire code's status, and the handlers that answer errors.

An error declares its wire code where it is defined (a ``code`` attribute:
the provider errors, :class:`~tether.api.auth.Unauthorized`, ...), so renaming
a class never changes what clients see; this module maps codes to HTTP
statuses (:data:`STATUS`, and :data:`RUN_STATUS` for a run's error events),
once for every front. The session API answers with
``{"error": {"code", "message"}}``; the OpenAI-compatible gateway gives the
same statuses OpenAI's shape (:mod:`tether.api.openai.errors`).

Errors of the layers below that declare no code yet are given theirs here
(:data:`_CODES`); a class's own ``code`` wins, so they drop out of that table as
their classes declare one.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tether.api.auth import Unauthorized
from tether.api.idempotency import (
    BadIdempotencyKey,
    IdempotencyConflict,
    InProgress,
    KeyReused,
)
from tether.providers.base import (
    ProviderError,
    UpstreamInvalidRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
)
from tether.runtime.runner import Conflict, InvalidInput
from tether.sessions.service import QuotaExceeded, SessionNotFound
from tether.store.errors import BackendUnavailable, InsufficientStorage, StoreError
from tether.streams.http_errors import HTTPError
from tether.streams.wire import WireError

#: Wire code -> HTTP status, for the errors a request fails with.
STATUS: dict[str, int] = {
    "invalid_input": 400,
    BadIdempotencyKey.code: 400,
    Unauthorized.code: 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    KeyReused.code: 409,
    InProgress.code: 409,
    "too_large": 413,
    "validation_error": 422,
    "quota_exceeded": 429,
    "unavailable": 503,
    "insufficient_storage": 507,
}

#: The code of a run's error event -> the status of a request answered by that run
#: (the gateway's); a run that failed otherwise is a 500.
RUN_STATUS: dict[str, int] = {
    UpstreamInvalidRequest.code: 400,
    UpstreamNotFound.code: 404,
    UpstreamRateLimited.code: 429,
    ProviderError.code: 502,
}

#: The codes of errors whose classes declare none (yet).
_CODES: dict[type[Exception], str] = {
    SessionNotFound: "not_found",
    QuotaExceeded: "quota_exceeded",
    InvalidInput: "invalid_input",
    Conflict: "conflict",
    BackendUnavailable: "unavailable",
    InsufficientStorage: "insufficient_storage",
}

#: Starlette's own errors (unknown routes, wrong methods, bodies too large): status -> code.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def code_of(exc: Exception) -> str:
    """The wire code of ``exc``: its class's ``code``, else the one given here."""
    code = getattr(type(exc), "code", None)
    if isinstance(code, str):
        return code
    for cls in type(exc).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    raise LookupError(f"{type(exc).__name__} has no wire code")


def run_status(code: str | None) -> int:
    """The HTTP status of a request whose run failed with the error event code ``code``."""
    return RUN_STATUS.get(code or "", 500)


def error_body(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _coded(request: Request, exc: Exception) -> JSONResponse:
    code = code_of(exc)
    resp = error_body(STATUS[code], code, str(exc))
    if isinstance(exc, Unauthorized):
        resp.headers["www-authenticate"] = "Bearer"
    if isinstance(exc, StoreError):
        # The store cannot take writes for now (Redis is away, the disk is full):
        # nothing was acknowledged, so the same request may be sent again later.
        resp.headers["retry-after"] = str(exc.retry_after)
    return resp


async def _starlette(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes, wrong methods, bodies past --max-body: the same error shape.
    code = _HTTP_CODES.get(exc.status_code, "error")
    resp = error_body(exc.status_code, code, str(exc.detail).lower())
    for name, value in (exc.headers or {}).items():
        resp.headers[name] = value
    return resp


async def _http(request: Request, exc: HTTPError) -> JSONResponse:
    resp = error_body(exc.status, exc.code, str(exc))
    for name, value in exc.headers:
        resp.headers[name.decode("latin-1")] = value.decode("latin-1")
    return resp


async def _wire(request: Request, exc: WireError) -> JSONResponse:
    return error_body(exc.status, exc.code, str(exc))


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return error_body(422, "validation_error", message)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the session API's routes raise in its one shape."""
    for cls in (*_CODES, Unauthorized, BadIdempotencyKey, IdempotencyConflict):
        app.add_exception_handler(cls, _coded)
    app.add_exception_handler(StarletteHTTPException, _starlette)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPError, _http)  # type: ignore[arg-type]
    app.add_exception_handler(WireError, _wire)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
