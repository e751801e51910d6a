"""The OpenAPI entries of the routes FastAPI does not serve: raw streams and the WebSocket.

``/v1/stream/{path}`` is a plain ASGI app (tether.streams.app) that FastAPI
never sees, and FastAPI leaves WebSocket routes out of its document, so
without this module ``/openapi.json`` (and ``/docs``) showed neither. The
entries are written here by hand, next to nothing else, and merged into the
generated document once, when it is first asked for.

The WebSocket is documented as what its handshake is, a ``GET`` with
``Upgrade: websocket`` answered ``101``: OpenAPI 3.1 has no WebSocket
operation, and an ``x-`` extension would be invisible to Swagger UI and to
every client generator, whereas a GET shows up beside the SSE route it mirrors.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tether.api.responses import ERROR_RESPONSES

PROTOCOL_URL = "https://github.com/durable-streams/durable-streams/blob/main/PROTOCOL.md"

Operation = dict[str, Any]

_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}

_OFFSET = (
    "`-1` (the start), `now` (the tail), or an offset a response gave in "
    "`Stream-Next-Offset` (`0000000000000000_0000000000000042`)"
)


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


_PATH = _param(
    "path",
    "path",
    "The stream's name; it may hold `/` (`sessions/abc` is a session's stream)",
)
_NEXT_OFFSET = _header("Read again from here to get what came after")
_CLOSED = _header("`true` once the stream is closed")
_UP_TO_DATE = _header("`true` when the read reached the tail")


#: What FastAPI's routes may answer and these may not: the front door's 415 is for
#: JSON routes only, and neither raw streams nor a socket have FastAPI's validation.
_NOT_HERE = frozenset({415, 422})


def _errors(*extra: tuple[int, str]) -> dict[str, Any]:
    """Every refusal the front door and the store may give, plus ``extra``."""
    out: dict[str, Any] = {
        str(status): {"description": spec["description"], "content": _ERROR_REF}
        for status, spec in ERROR_RESPONSES.items()
        if status not in _NOT_HERE
    }
    for status, why in extra:
        out[str(status)] = {"description": why, "content": _ERROR_REF}
    return out


def _op(summary: str, description: str, responses: dict[str, Any], **rest: Any) -> Operation:
    return {
        "tags": ["streams"],
        "summary": summary,
        "description": description + f"\n\nThe protocol: [PROTOCOL.md]({PROTOCOL_URL}).",
        "parameters": [_PATH, *rest.pop("parameters", [])],
        "responses": responses,
        **rest,
    }


def _body(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "required": False,
        "content": {
            "application/json": {"schema": {}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }


def _put() -> Operation:
    created = {
        "description": "Created",
        "headers": {"Location": _header("The stream's URL"), "Stream-Next-Offset": _NEXT_OFFSET},
    }
    return _op(
        "Create a stream",
        "Idempotent: the same PUT again answers 200. Its `Content-Type` is the "
        "stream's (default application/octet-stream); the body, if any, its first messages. "
        "`Stream-Forked-From` (with `Stream-Fork-Offset`) "
        "makes a fork that reads through its source.",
        {
            "201": created,
            "200": {"description": "Exists already, with the same settings"},
            **_errors((409, "Exists with other settings"), (410, "Deleted, still read by forks")),
        },
        parameters=[
            _param("Stream-TTL", "header", "Seconds of idleness before it expires", type="integer"),
            _param("Stream-Expires-At", "header", "An RFC 3339 time it expires at"),
            _param("Stream-Closed", "header", "`true`: create it closed"),
            _param("Stream-Forked-From", "header", "The stream to fork"),
            _param("Stream-Fork-Offset", "header", "Where the fork starts in its source"),
        ],
        requestBody=_body("Optional first messages (a JSON array appends each element)"),
    )


def _post() -> Operation:
    producer = {
        "Producer-Epoch": _header("The producer's epoch"),
        "Producer-Seq": _header("The last sequence number taken"),
    }
    return _op(
        "Append",
        "Appends the body, whose `Content-Type` must be the stream's (a JSON array: "
        "one message per element). `Producer-Id`, "
        "`-Epoch` and `-Seq` make retries exactly-once; `Stream-Closed: true` closes it.",
        {
            "204": {
                "description": "Appended",
                "headers": {"Stream-Next-Offset": _NEXT_OFFSET, "Stream-Closed": _CLOSED},
            },
            "200": {"description": "Appended by an idempotent producer", "headers": producer},
            **_errors(
                (403, "A stale producer epoch"),
                (409, "Closed, a content type or sequence conflict, or a producer gap"),
                (410, "Deleted, still read by forks"),
            ),
        },
        parameters=[
            _param("Stream-Seq", "header", "Must grow byte-wise on each append"),
            _param("Stream-Closed", "header", "`true`: close the stream (with or without a body)"),
            _param("Producer-Id", "header", "An idempotent producer's id"),
            _param("Producer-Epoch", "header", "Its epoch", type="integer"),
            _param("Producer-Seq", "header", "Its sequence number", type="integer"),
        ],
        requestBody=_body("The messages"),
    )


def _get() -> Operation:
    read = {
        "Stream-Next-Offset": _NEXT_OFFSET,
        "Stream-Up-To-Date": _UP_TO_DATE,
        "Stream-Closed": _CLOSED,
        "ETag": _header("For If-None-Match"),
    }
    return _op(
        "Read",
        "Without `live`: what is there from `offset` (about 4 MiB at most; follow "
        "`Stream-Next-Offset` until `Stream-Up-To-Date`). `live=long-poll` waits for "
        "more (204 after `--long-poll-timeout`); `live=sse` is a Server-Sent Events "
        "stream of `data` and `control` events, which ends after 60 s (reconnect "
        "from the last `streamNextOffset`). A JSON stream's messages come as a JSON array.",
        {
            "200": {
                "description": "The messages (or an SSE stream)",
                "headers": read,
                "content": {
                    "application/json": {"schema": {"type": "array", "items": {}}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            "204": {"description": "Long-poll: nothing new before the timeout", "headers": read},
            "304": {"description": "Not modified (If-None-Match)"},
            **_errors((410, "Deleted, still read by forks")),
        },
        parameters=[
            _param("offset", "query", "Where to read from: " + _OFFSET + "; live reads need one"),
            _param("live", "query", "Wait for more", enum=["long-poll", "sse"]),
            _param("cursor", "query", "The `Stream-Cursor` of the last long-poll (for caches)"),
            _param("If-None-Match", "header", "An ETag of an earlier read"),
        ],
    )


def _head() -> Operation:
    return _op(
        "Its metadata",
        "The content type, tail offset, TTL or expiry and whether it is closed; no body.",
        {
            "200": {
                "description": "It exists",
                "headers": {
                    "Stream-Next-Offset": _NEXT_OFFSET,
                    "Stream-Closed": _CLOSED,
                    "Stream-TTL": _header("Seconds of idleness left"),
                    "Stream-Expires-At": _header("When it expires"),
                },
            },
            **_errors((410, "Deleted, still read by forks")),
        },
    )


def _delete() -> Operation:
    return _op(
        "Delete a stream",
        "Its forks keep reading what they need; its URL answers 410 until they are gone.",
        {"204": {"description": "Deleted"}, **_errors((410, "Deleted already, read by forks"))},
    )


def _websocket() -> Operation:
    return {
        "tags": ["sessions"],
        "summary": "A session's events over a WebSocket",
        "description": (
            "A WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`; "
            "OpenAPI has no WebSocket operation, so it is listed as the GET it starts "
            'as). Each text message is `{"offset": <the offset after it>, "event": <an '
            "event>}`, the same events as "
            "`GET /v1/sessions/{session_id}/events`, from `offset` on. A browser cannot "
            "send headers: give a read token as `?token=`. A refused socket is closed "
            "with 4404 (no such session) or 4400 (a bad offset or key); one refused at "
            "the door (its Host, Origin or rate) gets 403 before the handshake."
        ),
        "parameters": [
            _param("session_id", "path", "The session"),
            _param("offset", "query", "Where to start: " + _OFFSET + " (default `-1`)"),
            _param("token", "query", "A read token (`POST /v1/sessions/{id}/read-token`)"),
            _param("Upgrade", "header", "`websocket`"),
        ],
        "responses": {
            "101": {"description": "Switching Protocols: the events follow as text messages"},
            **_errors(),
        },
    }


def stream_paths(prefix: str) -> dict[str, Any]:
    """The ``paths`` entries of the raw streams under ``prefix`` (``/v1/stream/``)."""
    item = {"put": _put(), "post": _post(), "get": _get(), "head": _head(), "delete": _delete()}
    return {prefix.rstrip("/") + "/{path}": item}


def websocket_paths() -> dict[str, Any]:
    """The ``paths`` entry of the session WebSocket."""
    return {"/v1/sessions/{session_id}/ws": {"get": _websocket()}}


def document_unrouted(web: FastAPI, stream_prefix: str) -> None:
    """Make ``web``'s OpenAPI document list the raw streams and the WebSocket too."""
    generate = web.openapi

    def openapi() -> dict[str, Any]:
        if web.openapi_schema is None:
            schema = generate()
            schema["paths"].update(stream_paths(stream_prefix))
            schema["paths"].update(websocket_paths())
            web.openapi_schema = schema
        return web.openapi_schema

    web.openapi = openapi  # type: ignore[method-assign]
