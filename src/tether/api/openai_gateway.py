"""An OpenAI-compatible Chat Completions endpoint in front of tether's models.

``POST /v1/chat/completions`` takes OpenAI's request and answers with OpenAI's
``chat.completion`` object or, streamed, ``chat.completion.chunk`` objects and
``data: [DONE]``; errors come in OpenAI's shape, ``{"error": {"message",
"type", "param", "code"}}``. Clients authenticate with a tether key; the
upstream's key stays on the server, and of a request's fields only the
messages, the tools, ``tool_choice`` and the whitelisted sampling options
(``providers.base.SAMPLING_OPTIONS``) are used. Everything else (client
credentials, base URLs, unknown fields) is dropped and never reaches an
upstream.

Each completion is a run in a session of its own, owned by the caller: the
request's earlier turns are seeded into a new session, the last user message is
sent (or, when the request ends with tool results, the run continues the
conversation), and the answer is read from the session's events. A completion
is therefore durable and resumable: the response's ``X-Tether-Stream-Url``
(``GET /v1/chat/completions/{session_id}/stream?offset=...``) serves the same
chunks, byte for byte, from any offset. Each SSE event's ``id:`` is the
session-stream offset after the event it came from, so a client that lost the
connection reads the rest from the last id it saw (``?offset=`` or
``Last-Event-ID``), with nothing repeated or missing.

Like OpenAI's API the gateway is stateless: when the model asks for tools, the
answer ends with ``tool_calls`` (finish_reason ``tool_calls``) and so does the
run; the client runs them and sends a new request with ``role: tool`` messages.
Reasoning, when a model streams it, comes as ``reasoning_content`` (the field
vLLM and DeepSeek use).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.agents.gateway import ERROR_CODES, PREFETCHES, GatewaySpec, Prefetch, model_request
from tether.api.auth import Auth, Caller, Unauthorized, session_resource
from tether.api.relay import EventStreamResponse, Follow
from tether.providers._http import HTTPProvider
from tether.providers.base import SAMPLING_OPTIONS, ChatMessage, Provider
from tether.providers.registry import ProviderRegistry, UnknownModel
from tether.runtime.runner import Runtime
from tether.sessions import events as ev
from tether.sessions.service import QuotaExceeded, SessionNotFound, SessionService
from tether.store.errors import BackendUnavailable, InsufficientStorage
from tether.streams import json_body
from tether.streams.json_body import JsonLimits
from tether.streams.wire import WireError, format_offset, parse_offset

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMBER_OPTIONS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_OPTIONS = ("max_tokens", "max_completion_tokens", "seed")
DONE = b"data: [DONE]\n\n"

log = logging.getLogger(__name__)


# -- errors ---------------------------------------------------------------------


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


def _invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def _run_error(code: str | None, message: str) -> OpenAIError:
    """The error for a run that ended badly; ``code`` is its error event's code."""
    status = ERROR_CODES.get(code or "", 500)
    if status == 400:
        return OpenAIError(400, message, code="upstream_invalid_request")
    if status == 404:
        return OpenAIError(404, message, code="model_not_found")
    if status == 429:
        return OpenAIError(429, message, type="rate_limit_error", code="rate_limit_exceeded")
    if status == 502:
        return OpenAIError(502, message, type="server_error", code="upstream_error")
    return OpenAIError(500, message, type="server_error", code=code)


# -- the request ------------------------------------------------------------------


@dataclass(slots=True)
class Completion:
    """A validated request: the session to create and what to run in it."""

    spec: GatewaySpec
    system: str | None
    #: Earlier turns, in Runtime.seed's form.
    seed: list[dict[str, Any]]
    #: Parts of the last user message, when the request ends with one; else the
    #: run continues after the seeded turns (tool results, an assistant turn).
    send: list[dict[str, Any]] | None
    title: str = "Chat completion"


def _text(content: Any, param: str, *, nullable: bool = False) -> list[str]:
    """The text pieces of a message's ``content`` (a string or text parts)."""
    if content is None:
        if nullable:
            return []
        raise _invalid(f"Invalid value for '{param}': expected a string or an array.", param)
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _invalid(f"Invalid type for '{param}': expected a string or an array.", param)
    out: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind == "refusal" and nullable:
            continue
        else:
            raise _invalid(
                f"Invalid content part {param}[{j}]: only text parts are supported.",
                f"{param}[{j}]",
                "unsupported_content",
            )
    return out


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise _invalid(
                f"Invalid value for 'tools[{i}]': only function tools are supported.",
                f"tools[{i}]",
            )
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise _invalid(
                f"Invalid 'tools[{i}].function.name': a string of letters, digits, _ or -, "
                "at most 64 characters.",
                f"tools[{i}].function.name",
            )
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise _invalid(
                f"Invalid type for 'tools[{i}].function.parameters': expected an object.",
                f"tools[{i}].function.parameters",
            )
        description = fn.get("description")
        out.append(
            {
                "name": name,
                "description": description if isinstance(description, str) else "",
                "parameters": params,
            }
        )
    return out


def _tool_choice(raw: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    if raw is None:
        return None
    if not tools:
        raise _invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    if raw in ("none", "auto", "required"):
        return str(raw)
    name = (raw.get("function") or {}).get("name") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(name, str):
        if name not in {t["name"] for t in tools}:
            raise _invalid(
                f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.",
                "tool_choice",
            )
        return {"type": "function", "function": {"name": name}}
    raise _invalid(
        "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a named function.",
        "tool_choice",
    )


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The whitelisted sampling options, type-checked; every other field is dropped."""
    out: dict[str, Any] = {}
    for key in sorted(SAMPLING_OPTIONS):
        value = body.get(key)
        if value is None:
            continue
        if key in _NUMBER_OPTIONS:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif key in _INT_OPTIONS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif key == "stop":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(s, str) for s in value)
            )
        elif key == "response_format":
            ok = isinstance(value, dict) and isinstance(value.get("type"), str)
        elif key == "parallel_tool_calls":
            ok = isinstance(value, bool)
        else:  # reasoning_effort
            ok = isinstance(value, str)
        if not ok:
            raise _invalid(f"Invalid type for '{key}'.", key, "invalid_type")
        out[key] = value
    return out


def parse_completion(body: Any) -> Completion:
    """Validate a Chat Completions request body; OpenAIError (400) if it is not one."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise _invalid(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if not isinstance(model, str) or not model.strip():
        raise _invalid("Invalid value for 'model': expected a model name.", "model")
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise _invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _invalid(
            "Invalid value for 'messages': expected a non-empty array.", "messages", "empty_array"
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise _invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(stream_options, dict):
            raise _invalid(
                "Invalid type for 'stream_options': expected an object.", "stream_options"
            )
    n = body.get("n")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise _invalid("Invalid value for 'n': expected an integer >= 1.", "n")
        if n > 1:
            raise _invalid("n > 1 is not supported by this server.", "n", "unsupported_value")
    tools = _tools(body.get("tools"))
    spec = GatewaySpec(
        model=model,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        options=_options(body),
        stream=bool(stream),
        include_usage=bool((stream_options or {}).get("include_usage")),
    )
    system, turns = _turns(raw_messages)
    if not turns:
        raise _invalid(
            "Invalid value for 'messages': it must hold a user or assistant message.", "messages"
        )
    send = None
    if turns[-1]["role"] == "user":
        send = [{"type": "text", "text": t} for t in turns.pop()["parts"]] or [
            {"type": "text", "text": ""}
        ]
    for turn in turns:
        if turn["role"] == "user":
            turn["text"] = "".join(turn.pop("parts"))
    lines = "".join(p["text"] for p in send).strip().splitlines() if send else []
    return Completion(spec, system, turns, send, lines[0][:80] if lines else "Chat completion")


def _turns(raw: list[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system text, turns for Runtime.seed) from OpenAI messages, checked like OpenAI does."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    #: Tool calls of the last assistant message still waiting for their tool message.
    pending: dict[str, dict[str, Any]] = {}
    pending_at = 0
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _invalid(f"Invalid type for '{where}': expected an object.", where)
        role = m.get("role")
        if role != "tool" and pending:
            raise _invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}",
                f"messages.[{pending_at}].role",
            )
        if role in ("system", "developer"):
            text = "".join(_text(m.get("content"), f"{where}.content"))
            if text:
                system.append(text)
        elif role == "user":
            turns.append({"role": "user", "parts": _text(m.get("content"), f"{where}.content")})
        elif role == "assistant":
            calls = _assistant_calls(m.get("tool_calls"), where)
            text = "".join(_text(m.get("content"), f"{where}.content", nullable=True))
            turns.append({"role": "assistant", "text": text, "tool_calls": calls})
            pending = {c["id"]: c for c in calls}
            pending_at = i
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise _invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceding message with 'tool_calls'.",
                    f"{where}.role",
                )
            pending.pop(call_id)["result"] = "".join(_text(m.get("content"), f"{where}.content"))
        else:
            raise _invalid(
                f"Invalid value for '{where}.role': expected one of system, developer, user, "
                "assistant or tool.",
                f"{where}.role",
            )
    if pending:
        raise _invalid(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(pending)}",
            f"messages.[{pending_at}].role",
        )
    return ("\n\n".join(system) or None), turns


def _assistant_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid(f"Invalid type for '{where}.tool_calls': expected an array.")
    calls: list[dict[str, Any]] = []
    for j, call in enumerate(raw):
        fn = call.get("function") if isinstance(call, dict) else None
        ok = (
            isinstance(call, dict)
            and isinstance(call.get("id"), str)
            and call["id"]
            and isinstance(fn, dict)
            and isinstance(fn.get("name"), str)
            and isinstance(fn.get("arguments", ""), str)
        )
        if not ok:
            raise _invalid(
                f"Invalid value for '{where}.tool_calls[{j}]': expected an id and a function "
                "with a name and arguments.",
                f"{where}.tool_calls[{j}]",
            )
        assert isinstance(call, dict) and isinstance(fn, dict)
        calls.append({"id": call["id"], "name": fn["name"], "arguments": fn.get("arguments", "")})
    return calls


# -- the answer -------------------------------------------------------------------


def completion_id(run_id: str) -> str:
    """The chat.completion id of a run: the same for every read of it."""
    return "chatcmpl-" + run_id.removeprefix("run_")


class ChunkMapper:
    """A gateway session's events -> OpenAI chunks, one output at most per event.

    Deterministic: the same events give the same outputs, so a reader that
    replays a run's events up to an offset is in exactly the state a reader
    that streamed them was in. Only the session's first run counts (a gateway
    session has one); seeded history carries no run id and is skipped.
    """

    def __init__(self, spec: GatewaySpec, *, frames: bool = True) -> None:
        self.spec = spec
        #: Whether :meth:`frame` writes SSE (not for a completion answered whole).
        self.frames = frames
        self.run_id: str | None = None
        self.created = 0
        self.message_id: str | None = None
        self._kinds: dict[str, str] = {}
        self._calls: dict[str, dict[str, Any]] = {}
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.usage: dict[str, int] | None = None
        self.error: OpenAIError | None = None
        #: The run-end's reason, once it has been seen.
        self.ended: str | None = None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def usage_json(self) -> dict[str, int]:
        prompt = (self.usage or {}).get("input_tokens", 0)
        completion = (self.usage or {}).get("output_tokens", 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id(self.run_id or ""),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.spec.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.spec.include_usage:
            out["usage"] = None
        return out

    def apply(self, e: dict[str, Any]) -> dict[str, Any] | None:
        """Take one event; return the chunk (or ``{"error": ...}``) it makes, if any."""
        kind = e.get("type")
        if kind == ev.RUN_START and self.run_id is None:
            self.run_id = e["run_id"]
            self.created = int(e.get("ts") or 0)
            return None
        if self.run_id is None or e.get("run_id") != self.run_id or self.ended is not None:
            return None
        if kind == ev.MESSAGE_START and self.message_id is None:
            self.message_id = e["message_id"]
            return self._chunk({"role": "assistant", "content": "", "refusal": None})
        if kind == ev.PART_START and e.get("message_id") == self.message_id:
            self._kinds[e["part_id"]] = e.get("kind", ev.TEXT)
            if e.get("kind") == ev.TOOL_CALL:
                self._calls[e["part_id"]] = {
                    "id": e.get("tool_call_id", ""),
                    "name": e.get("tool_name", ""),
                }
            return None
        if kind == ev.PART_DELTA:
            part = self._kinds.get(e["part_id"])
            delta = e.get("delta", "")
            if part == ev.TEXT:
                self.text.append(delta)
                return self._chunk({"content": delta})
            if part == ev.REASONING:
                self.reasoning.append(delta)
                return self._chunk({"reasoning_content": delta})
            return None
        if kind == ev.PART_END and e["part_id"] in self._calls:
            call = self._calls.pop(e["part_id"])
            value = e.get("value")
            arguments = value if isinstance(value, str) else orjson.dumps(value).decode()
            index = len(self.tool_calls)
            self.tool_calls.append(
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": arguments},
                }
            )
            return self._chunk({"tool_calls": [{"index": index, **self.tool_calls[-1]}]})
        if kind == ev.MESSAGE_END and e.get("message_id") == self.message_id:
            self.usage = e.get("usage") or None
            return self._chunk({}, self.finish_reason)
        if kind == ev.ERROR:
            self.error = _run_error(e.get("code"), e.get("message") or "the run failed")
            return {"error": self.error.body}
        if kind == ev.RUN_END:
            self.ended = e.get("reason", ev.COMPLETE)
            if self.ended == ev.COMPLETE:
                if not self.spec.include_usage:
                    return None
                out = self._chunk({})
                out["choices"] = []
                out["usage"] = self.usage_json
                return out
            if self.error is None:
                self.error = OpenAIError(
                    500 if self.ended == ev.CANCELLED else 503,
                    f"the run was {self.ended}",
                    type="server_error",
                    code=f"run_{self.ended}",
                )
                return {"error": self.error.body}
        return None

    @property
    def ok(self) -> bool:
        return self.ended == ev.COMPLETE and self.error is None

    # -- the relay's translator ----------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.ended is not None

    def frame(self, position: int, event: bytes) -> bytes:
        """The SSE frame of the chunk ``event`` makes, if any; ``id:`` is ``position``."""
        output = self.apply(orjson.loads(event))
        if output is None or not self.frames:
            return b""
        return (
            b"id: "
            + format_offset(position).encode()
            + b"\ndata: "
            + orjson.dumps(output)
            + b"\n\n"
        )

    def last(self) -> bytes:
        """``data: [DONE]`` after a run that ended well (an error ends the stream as it is)."""
        return DONE if self.ok else b""

    def completion(self) -> dict[str, Any]:
        """The chat.completion object of a run that ended well."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) if self.text or not self.tool_calls else None,
            "refusal": None,
        }
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": completion_id(self.run_id or ""),
            "object": "chat.completion",
            "created": self.created,
            "model": self.spec.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage_json,
        }


# -- the routes -------------------------------------------------------------------


#: The path TetherApp serves through :attr:`OpenAIRoutes.completions` directly.
COMPLETIONS_PATH = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class OpenAIRoutes:
    """The gateway's FastAPI routes, and its completions endpoint as plain ASGI.

    TetherApp sends ``POST /v1/chat/completions`` to ``completions`` without
    going through FastAPI: every completion's time to first token pays for
    the work done before its upstream request is written, and FastAPI's
    routing, middleware and dependency handling were a third of it. The route
    stays in ``router`` too, for the OpenAPI document.
    """

    router: APIRouter
    completions: ASGIApp


def build_openai_router(
    sessions: SessionService,
    runtime: Runtime,
    auth: Auth,
    registry: ProviderRegistry,
    stop: Callable[[], asyncio.Future[None]],
    *,
    max_body: int = 10 * 1024 * 1024,
    json_limits: JsonLimits = JsonLimits(),  # noqa: B008 - frozen, never mutated
    agents: Callable[[], list[str]] = list,
) -> OpenAIRoutes:
    router = APIRouter(tags=["openai"])
    started = int(time.time())

    def caller(request: Request, *, reading: str | None = None) -> Caller:
        """The caller, or OpenAIError 401; a read token only reads session ``reading``."""
        token = request.query_params.get("token") if reading is not None else None
        try:
            who = auth.caller(request.headers.get("authorization"), token)
        except Unauthorized:
            if request.headers.get("authorization"):
                raise OpenAIError(
                    401, "Incorrect API key provided.", code="invalid_api_key"
                ) from None
            raise OpenAIError(
                401,
                "You didn't provide an API key. Send a tether key in an Authorization header "
                "(Authorization: Bearer <key>).",
            ) from None
        if who.read_only and (reading is None or not who.may_read(session_resource(reading))):
            raise OpenAIError(401, "A read token cannot do this.", code="invalid_api_key")
        return who

    async def read_body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise OpenAIError(413, f"The request body is larger than {max_body} bytes.")
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > max_body:
                raise OpenAIError(413, f"The request body is larger than {max_body} bytes.")
        try:
            value = json_body.parse(bytes(raw), json_limits)
            json_body.check_value(value, json_limits)  # what a session's events can carry
            return value
        except json_body.JsonTooLarge as err:
            raise OpenAIError(413, str(err)) from None
        except WireError as err:
            raise _invalid(
                "We could not parse the JSON body of your request. The request body must be "
                f"valid JSON ({err})."
            ) from None

    def check_model(model: str) -> tuple[Provider, str]:
        if model.startswith("agent:"):
            raise _invalid(
                f"The model `{model}` is an agent; agents are served by the session API "
                "(/v1/sessions), not by /v1/chat/completions.",
                "model",
                "model_not_supported",
            )
        try:
            return registry.resolve(model)
        except UnknownModel:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            ) from None

    @router.post(COMPLETIONS_PATH, response_model=None)
    async def chat_completions(request: Request) -> Response:
        """OpenAI's Chat Completions, streamed or not; see the module's docstring."""
        try:
            who = caller(request)
            req = parse_completion(await read_body(request))
            provider, model = check_model(req.spec.model)
        except OpenAIError as err:
            return err.response(_auth_header(err))
        # Ask the upstream now: the session is set up while it thinks.
        prefetch = _prefetch(req, provider, model)
        if prefetch is not None:
            # Yield once before the set-up below: the requests that arrived with
            # this one get their upstream requests written first (and an unwritten
            # prefetch's task writes this one), so a burst's set-ups run while the
            # upstream thinks instead of each delaying the next one's request.
            await asyncio.sleep(0)
        record = None
        try:
            record = await sessions.create(
                owner=who.owner,
                model=req.spec.model,
                agent=None,
                system=req.system,
                title=req.title,
                metadata={"gateway": req.spec.to_metadata()},
            )
            if prefetch is not None:
                PREFETCHES.put(record.id, prefetch)
            leaf, start = None, 0  # a new session's stream is empty
            if req.seed:
                leaf = await runtime.seed(record.id, req.seed)
                start = await sessions.end_position(record.id)
            if req.send is not None:
                _, run_id, _ = await runtime.send(record.id, req.send)
            else:
                assert leaf is not None
                run_id, _ = await runtime.answer(record.id, leaf)
        except QuotaExceeded as err:
            if prefetch is not None:
                prefetch.discard()
            return OpenAIError(
                429, str(err), type="insufficient_quota", code="insufficient_quota"
            ).response()
        except BaseException:
            if prefetch is not None:
                prefetch.discard()
            if record is not None:  # a request that fails leaves no session behind
                await runtime.forget(record.id)
                await sessions.delete(record.id)
            raise
        headers = {
            "x-tether-session-id": record.id,
            "x-tether-run-id": run_id,
            "x-tether-stream-url": (
                f"/v1/chat/completions/{record.id}/stream?offset={format_offset(start)}"
            ),
        }
        mapper = ChunkMapper(req.spec, frames=req.spec.stream)
        follow = Follow(
            sessions, record.id, start, mapper, stop=stop(),
            on_end=lambda: PREFETCHES.discard(record.id),
        )  # fmt: skip
        if not req.spec.stream:
            try:
                async for _ in follow.frames:
                    pass
            finally:
                await follow.aclose()
            if mapper.error is not None:
                return mapper.error.response(headers)
            if not mapper.ok:
                return OpenAIError(
                    503, "The server is shutting down; read the stream URL later.",
                    type="server_error",
                ).response(headers)  # fmt: skip
            return JSONResponse(mapper.completion(), headers=headers)
        # Hold the headers until the upstream has accepted the request (its
        # answer's head came back 2xx) or the model has said something, so that
        # a request the upstream refuses outright gets an HTTP error, as from
        # OpenAI. Errors after that come in the stream, as they do from OpenAI.
        answered = prefetch.answered if prefetch is not None else None
        if answered is not None and (run := runtime.run_task(record.id, run_id)) is not None:
            # A run that ends without taking the prefetch drops it: the wait ends.
            run.add_done_callback(lambda _: PREFETCHES.discard(record.id))
            if 200 <= await answered < 300:
                return EventStreamResponse(follow, headers)
        head: list[bytes] = []
        async for frames in follow.frames:
            if frames is None:
                break
            head += frames
            if mapper.error is not None and not (mapper.text or mapper.tool_calls):
                await follow.aclose()
                return mapper.error.response(headers)
            if len(head) > 1 or mapper.ended is not None:
                break
        return EventStreamResponse(follow, headers, head=b"".join(head))

    @router.get("/v1/models", response_model=None)
    async def models(request: Request) -> Response:
        """The configured upstreams' models, ``demo`` and this server's agents (``agent:<name>``).

        Authenticated like the rest of OpenAI's API: with keys configured, the
        list is for key holders only.
        """
        try:
            caller(request)
        except OpenAIError as err:
            return err.response(_auth_header(err))
        names = registry.list_models() + [f"agent:{a}" for a in agents()]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": started, "owned_by": "tether"}
                    for n in names
                ],
            }
        )

    @router.get("/v1/chat/completions/{session_id}/stream", response_model=None)
    async def completion_stream(session_id: str, request: Request) -> Response:
        """A completion's chunks again, from ``?offset=`` or ``Last-Event-ID`` on."""
        try:
            who = caller(request, reading=session_id)
            try:
                record = await sessions.record(session_id, who.owner)
            except SessionNotFound:
                record = None
            if record is None or not record.metadata.get("gateway"):
                raise OpenAIError(
                    404, f"No chat completion {session_id}.", param="session_id",
                    code="not_found",
                )  # fmt: skip
            raw = request.headers.get("last-event-id") or request.query_params.get("offset")
            tail_at = await sessions.end_position(session_id)
            try:
                after = parse_offset(raw or "-1")
            except WireError as err:
                raise _invalid(str(err), "offset") from None
            after = tail_at if after is None else after
            if after > tail_at:
                raise _invalid("offset is beyond the end of this completion's stream", "offset")
        except OpenAIError as err:
            return err.response(_auth_header(err))
        mapper = ChunkMapper(GatewaySpec.from_metadata(record.metadata["gateway"]))
        follow = Follow(
            sessions, session_id, 0, mapper, stop=stop(), after=after,
            on_end=lambda: PREFETCHES.discard(session_id),
        )  # fmt: skip
        return EventStreamResponse(follow, {"x-tether-session-id": session_id})

    async def completions(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await chat_completions(Request(scope, receive))
        except ClientDisconnect:
            return  # the client went, or its body was too slow (408): no one to answer
        except (BackendUnavailable, InsufficientStorage) as err:
            # The store cannot take writes for now (Redis is away, the disk is
            # full); nothing was acknowledged, so a retry is safe.
            status, code = (
                (503, "store_unavailable")
                if isinstance(err, BackendUnavailable)
                else (507, "insufficient_storage")
            )
            response = OpenAIError(status, str(err), type="server_error", code=code).response(
                {"retry-after": str(err.retry_after)}
            )
        except Exception:
            log.exception("chat completion failed")
            response = OpenAIError(
                500, "The server had an error while processing your request.",
                type="server_error",
            ).response()  # fmt: skip
        await response(scope, receive, send)

    return OpenAIRoutes(router, completions)


def _prefetch(req: Completion, provider: Provider, model: str) -> Prefetch | None:
    """Start the upstream request of a completion before its session exists.

    Only for plain conversations (no tool calls in the history), whose upstream
    messages are known from the request alone, and for upstreams reached over
    HTTP (the demo model seeds its answer with the run id); the run checks that
    it would have sent exactly this request before it takes the response.
    """
    if req.send is None or not isinstance(provider, HTTPProvider):
        return None
    messages = [ChatMessage("system", req.system)] if req.system else []
    for turn in req.seed:
        if turn["role"] == "user":
            messages.append(ChatMessage("user", turn["text"]))
        elif turn.get("tool_calls"):
            return None
        else:
            messages.append(ChatMessage("assistant", turn["text"], []))
    messages.append(ChatMessage("user", "".join(p["text"] for p in req.send)))
    return Prefetch(provider, model_request(model, messages, req.spec))


def _auth_header(err: OpenAIError) -> dict[str, str] | None:
    return {"www-authenticate": "Bearer"} if err.status == 401 else None
