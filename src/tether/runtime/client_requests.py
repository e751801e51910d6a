"""The client channel: JSON-RPC requests a session puts to its connected clients.

A run (``ctx.request_client``) or a backend (``POST /v1/sessions/{id}/interact``)
asks; a ``client-request`` event in the session's log carries the question and a
``client-response`` event its one answer, so that any client, on any replica,
sees what is pending and may answer it (once). The answer follows JSON-RPC 2.0:
a ``result``, or an ``error`` ``{code, message, data?}``.

This module is the I/O-free part: the error an agent gets, and what the typed
methods (``signin``, ``confirm``, ``input``) ask and accept as an answer.
"""

from __future__ import annotations

from typing import Any, Final

# JSON-RPC 2.0 error codes (the spec's, then the one tether defines in the
# range the spec leaves to servers).
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
INVALID_PARAMS: Final = -32602
#: The request was not answered before its timeout.
TIMED_OUT: Final = -32001

SIGNIN: Final = "signin"
CONFIRM: Final = "confirm"
INPUT: Final = "input"
SIGNIN_STATUSES: Final = frozenset({"signed_in", "declined", "failed"})
INPUT_ACTIONS: Final = frozenset({"accept", "decline", "cancel"})
#: JSON Schema types an ``input`` request's properties may have (as MCP elicitation).
PRIMITIVES: Final = frozenset({"string", "number", "integer", "boolean"})


class ClientRequestError(Exception):
    """A client answered a request with a JSON-RPC error (or it timed out: TIMED_OUT)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC error {code})")
        self.code = code
        self.message = message
        self.data = data


def outcome(answer: dict[str, Any]) -> Any:
    """The result of an answer (``{"result": ...}`` or ``{"error": ...}``), or its error raised."""
    error = answer.get("error")
    if error is not None:
        raise ClientRequestError(int(error["code"]), str(error["message"]), error.get("data"))
    return answer.get("result")


def timed_out(timeout: float | None) -> dict[str, Any]:
    """The error a request gets when nobody answered it in time."""
    after = "" if timeout is None else f" after {timeout:g} s"
    return {"code": TIMED_OUT, "message": f"no client answered the request{after}"}


def params_problem(method: str, params: Any) -> str | None:
    """What is wrong with a typed method's params (None: fine, or a method not typed here)."""
    if method == SIGNIN:
        toolsets = params.get("toolsets") if isinstance(params, dict) else None
        if not isinstance(toolsets, list) or not toolsets:
            return "signin needs params.toolsets, a non-empty list"
        for t in toolsets:
            if not (isinstance(t, dict) and isinstance(t.get("id"), str)):
                return "each toolset of signin needs an id"
            if not isinstance(t.get("url"), str) or not t["url"].startswith(
                ("https://", "http://")
            ):
                return f"toolset {t['id']} needs an http(s) sign-in url"
        return None
    if method in (CONFIRM, INPUT):
        if not isinstance(params, dict) or not isinstance(params.get("message"), str):
            return f"{method} needs params.message, a string"
        if method == INPUT:
            return _schema_problem(params.get("schema"))
    return None


def _schema_problem(schema: Any) -> str | None:
    import jsonschema  # type: ignore[import-untyped]  # no stubs; imported when first needed

    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "input needs params.schema, a JSON Schema of type object"
    props = schema.get("properties")
    if not isinstance(props, dict):
        return "input's schema needs properties"
    for name, prop in props.items():
        if not isinstance(prop, dict) or prop.get("type") not in PRIMITIVES:
            return f"input's property {name} must be a string, number, integer or boolean"
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        return f"input's schema is not a valid JSON Schema: {err.message}"
    return None


def result_problem(method: str, params: Any, result: Any) -> str | None:
    """What is wrong with a result given to a typed request (None: it is acceptable)."""
    if method == SIGNIN:
        ids = {t["id"] for t in params["toolsets"]}
        if not isinstance(result, dict) or set(result) != ids:
            return f"a signin result has one entry per toolset: {sorted(ids)}"
        for tid, r in result.items():
            if not isinstance(r, dict) or r.get("status") not in SIGNIN_STATUSES:
                return f"toolset {tid}: status must be one of {sorted(SIGNIN_STATUSES)}"
        return None
    if method == CONFIRM:
        if not isinstance(result, dict) or not isinstance(result.get("confirmed"), bool):
            return "a confirm result is {confirmed: true or false}"
        return None
    if method == INPUT:
        import jsonschema

        if not isinstance(result, dict) or result.get("action") not in INPUT_ACTIONS:
            return f"an input result has an action: one of {sorted(INPUT_ACTIONS)}"
        if result["action"] == "accept":
            try:
                jsonschema.validate(result.get("content"), params["schema"])
            except jsonschema.ValidationError as err:
                return f"the content does not match the request's schema: {err.message}"
    return None


def error_problem(error: Any) -> str | None:
    """What is wrong with a JSON-RPC error object given as an answer."""
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return "error needs an integer code"
    if isinstance(error.get("code"), bool) or not isinstance(error.get("message"), str):
        return "error needs an integer code and a message"
    if set(error) - {"code", "message", "data"}:
        return "error has only code, message and data"
    return None
