"""The client channel's I/O-free part: JSON-RPC requests out, typed answers in.

A session asks its connected clients to act (a run's ``ctx.request_client``,
or a backend's ``interact``); each request is a ``client-request`` event and
its one answer a ``client-response``. Here: the requests an SDK call sends
(checked before they are sent), the responses it reads (``{"result": null}`` is
a result of None, not a missing one), and the typed methods' results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tether.client.errors import RpcError, RpcRequestInvalid, RpcServerError

SIGNIN = "signin"
CONFIRM = "confirm"
INPUT = "input"
#: The JSON-RPC code of a handler that failed (the spec's "internal error").
INTERNAL_ERROR = -32603
#: The code a request that nobody answered in time gets (the server's).
TIMED_OUT = -32001


@dataclass(frozen=True, slots=True)
class Toolset:
    """A toolset to sign in to: its id, the URL the user signs in at, a name to show."""

    id: str
    url: str
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "url": self.url}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class SigninResult:
    """How signing in to one toolset went."""

    status: Literal["signed_in", "declined", "failed"]
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class InputResult:
    """The answer to an ``input`` request: ``content`` (checked against the schema) if accepted."""

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RpcResponse:
    """One JSON-RPC response: ``error`` None means ``result`` is the answer (None included)."""

    id: str | int
    result: Any = None
    error: dict[str, Any] | None = None

    def value(self) -> Any:
        """The result, or the error raised as :class:`RpcError`."""
        if self.error is not None:
            raise rpc_error(self.error)
        return self.result


def rpc_error(error: Mapping[str, Any], cls: type[RpcError] = RpcError) -> RpcError:
    return cls(int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))


def checked_requests(requests: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> Any:
    """The body of an ``interact`` call: each request gets ``"jsonrpc": "2.0"``.

    A request without an ``id`` (a notification) would never be answered:
    :class:`RpcRequestInvalid` is raised before anything is sent.
    """
    single = isinstance(requests, Mapping)
    items = [requests] if isinstance(requests, Mapping) else list(requests)
    if not items:
        raise RpcRequestInvalid("no request to send")
    out = []
    for req in items:
        if req.get("id") is None:
            raise RpcRequestInvalid(
                f"request {req.get('method')!r} has no id: a notification is never answered"
            )
        if not isinstance(req.get("method"), str):
            raise RpcRequestInvalid("each request needs a method")
        out.append({"jsonrpc": "2.0", **req})
    return out[0] if single else out


def parsed_response(data: str) -> RpcResponse:
    """A JSON-RPC response as read from the stream; a server-level error (id null) raises."""
    try:
        obj = json.loads(data)
    except ValueError:
        obj = data
    if not isinstance(obj, dict):
        raise RpcServerError(-32603, f"not a JSON-RPC response: {obj!r}")
    if obj.get("id") is None:
        raise rpc_error(obj.get("error") or {"message": "error without an id"}, RpcServerError)
    if "error" in obj and obj["error"] is not None:
        return RpcResponse(obj["id"], error=obj["error"])
    return RpcResponse(obj["id"], result=obj.get("result"))


def rpc_refusal(body: bytes) -> RpcServerError | None:
    """The error of a call the server refused as a whole (a JSON-RPC error, id null), if so."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("jsonrpc") == "2.0" and isinstance(obj.get("error"), dict):
        err = rpc_error(obj["error"], RpcServerError)
        assert isinstance(err, RpcServerError)
        return err
    return None


def signin_params(toolsets: Iterable[Toolset | Mapping[str, Any]]) -> dict[str, Any]:
    listed = [t.to_json() if isinstance(t, Toolset) else dict(t) for t in toolsets]
    return {"toolsets": listed}


def signin_results(result: Any) -> dict[str, SigninResult]:
    return {tid: SigninResult(r["status"], r.get("detail")) for tid, r in dict(result).items()}


def input_result(result: Any) -> InputResult:
    return InputResult(result["action"], result.get("content"))


def answer_of(outcome: Any, failed: BaseException | None) -> dict[str, Any]:
    """The body of a client's answer: the handler's result, or the error it raised."""
    if failed is None:
        return {"result": outcome}
    if isinstance(failed, RpcError):
        error: dict[str, Any] = {"code": failed.code, "message": failed.message}
        if failed.data is not None:
            error["data"] = failed.data
        return {"error": error}
    return {"error": {"code": INTERNAL_ERROR, "message": f"{type(failed).__name__}: {failed}"}}
