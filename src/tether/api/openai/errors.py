"""Errors of the OpenAI-compatible gateway, in OpenAI's shape.

``{"error": {"message", "type", "param", "code"}}``, with the status OpenAI
would answer. A run that ended badly is answered by its error event's code
(:func:`run_error`), whose HTTP status :mod:`tether.api.errors` declares.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from tether.api.errors import STATUS, code_of, run_status
from tether.store.errors import StoreError


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "type": type, "param": param, "code": code}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": self.body}, status_code=self.status, headers=headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def run_error(code: str | None, message: str) -> OpenAIError:
    """The error for a run that ended badly; ``code`` is its error event's code."""
    status = run_status(code)
    if status == 400:
        return OpenAIError(400, message, code="upstream_invalid_request")
    if status == 404:
        return OpenAIError(404, message, code="model_not_found")
    if status == 429:
        return OpenAIError(429, message, type="rate_limit_error", code="rate_limit_exceeded")
    if status == 502:
        return OpenAIError(502, message, type="server_error", code="upstream_error")
    return OpenAIError(500, message, type="server_error", code=code)


#: The wire codes of a store that cannot take writes for now -> the gateway's codes.
_STORE_CODES = {"unavailable": "store_unavailable", "insufficient_storage": "insufficient_storage"}


def store_error(err: StoreError) -> OpenAIError:
    """The error for a store that cannot take writes for now (a retry is safe)."""
    code = code_of(err)
    return OpenAIError(STATUS[code], str(err), type="server_error", code=_STORE_CODES[code])


def auth_header(err: OpenAIError) -> dict[str, str] | None:
    """The ``WWW-Authenticate`` header a 401 comes with."""
    return {"www-authenticate": "Bearer"} if err.status == 401 else None
