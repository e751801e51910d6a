"""Errors of the Messages front, in Anthropic's shape.

``{"type": "error", "error": {"type", "message"}}`` with the status Anthropic
answers. The gateway's shared parts raise
:class:`~tether.api.openai.errors.OpenAIError`; this module renders one as
Anthropic would, by its status.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from tether.api.openai.errors import OpenAIError

#: HTTP status -> Anthropic's error type (other 5xx: api_error).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(err: OpenAIError) -> dict[str, Any]:
    """The body Anthropic answers an error with (also the data of a stream's ``error`` event)."""
    return {
        "type": "error",
        "error": {"type": error_type(err.status), "message": err.body["message"]},
    }


def error_response(err: OpenAIError, headers: dict[str, str] | None = None) -> JSONResponse:
    """``err`` as Anthropic answers it: its status, Anthropic's body."""
    return JSONResponse(error_body(err), status_code=err.status, headers=headers)
