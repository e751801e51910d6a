"""The error shape every route answers with, and the statuses the OpenAPI document lists.

Any route can be refused in front of it (a foreign Host or Origin, a body too
large or not JSON, too many requests), by auth, by validation, or by the store
(Redis away, disk full), so every operation documents all of those; the
OpenAI-compatible routes add fields of OpenAI's to the same shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str | None = None
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


_WHY = {
    400: "Invalid request (a Host that is not this server's, malformed JSON, bad values)",
    401: "Missing or invalid key or read token",
    403: "A web page of an origin that is not allowed (without keys)",
    404: "Not found, or not visible to this key",
    408: "The request body stalled (--body-timeout, --body-min-rate)",
    409: "Conflicts with the current state",
    413: "Body larger than --max-body, or JSON past the limits",
    415: "Not a JSON body (without keys)",
    422: "A field fails validation",
    429: "Past this key's request rate or quota",
    503: "The store is unavailable, or every connection is busy; retry after Retry-After",
    507: "The disk is full; retry after Retry-After",
}

#: For ``FastAPI(responses=...)``: every route documents every refusal above.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why} for status, why in _WHY.items()
}
