"""A Responses API request (``POST /v1/responses``), validated: pure parsing, no I/O.

The body becomes the front-neutral :class:`~tether.api.completion.Completion`
(the turns to seed, the user message to send, the tools and sampling options)
plus what only this front needs (:class:`Settings`: ``instructions``, ``store``,
``text``, ``reasoning``, ``metadata``; and the ``function_call_output`` items
that answer the calls of ``previous_response_id``'s answer). Of the body only
the fields below are used; everything else (client credentials, unknown
fields) is dropped and never reaches an upstream. What is refused is refused
as OpenAI refuses it: an :class:`~tether.api.openai.errors.OpenAIError` (400)
naming the parameter.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any

from tether.agents.gateway import GatewaySpec
from tether.api.completion import Completion, split_send
from tether.api.openai.errors import invalid
from tether.api.openai.request import function_tool
from tether.sessions.attachments import FILE, IMAGE, BadAttachment, attachment_part

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A response id: ``resp_`` + the hex of its session id + the hex of its run id.
_RESPONSE_ID = re.compile(r"resp_([0-9a-f]{22})([0-9a-f]{22})")
_EFFORTS = ("minimal", "low", "medium", "high")
_SUMMARIES = ("auto", "concise", "detailed")


def response_id(session_id: str, run_id: str) -> str:
    """A run's response id: it names the session too, so no index is needed to find it."""
    return "resp_" + session_id.removeprefix("ses_") + run_id.removeprefix("run_")


def parse_response_id(value: str) -> tuple[str, str] | None:
    """(session id, run id) of a response id; None if ``value`` is not one."""
    m = _RESPONSE_ID.fullmatch(value)
    return None if m is None else ("ses_" + m[1], "run_" + m[2])


@dataclass(slots=True)
class Settings:
    """What a Responses request asked for that only this front reads (in ``spec.extra``)."""

    instructions: str | None = None
    #: False: the response is not kept (see docs/responses.md).
    store: bool = True
    #: ``text`` as the response object echoes it (``{"format": {...}}``).
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    #: ``reasoning`` as echoed: ``{"effort", "summary"}``.
    reasoning: dict[str, Any] = field(default_factory=lambda: {"effort": None, "summary": None})
    metadata: dict[str, str] = field(default_factory=dict)
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    #: ``strict`` of each function tool, by name (echoed in the response's ``tools``).
    strict: dict[str, bool] = field(default_factory=dict)

    def to_extra(self) -> dict[str, Any]:
        return {
            "instructions": self.instructions,
            "store": self.store,
            "text": self.text,
            "reasoning": self.reasoning,
            "metadata": self.metadata,
            "max_output_tokens": self.max_output_tokens,
            "previous_response_id": self.previous_response_id,
            "strict": self.strict,
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Settings:
        out = cls()
        for name in cls.__slots__:
            if extra.get(name) is not None:
                setattr(out, name, extra[name])
        return out


@dataclass(slots=True)
class ResponsesRequest:
    #: Its ``results`` are the ``function_call_output`` items that answer the
    #: previous response's calls (they come before every other item).
    completion: Completion
    settings: Settings


def parse_request(body: Any) -> ResponsesRequest:
    """Validate a ``POST /v1/responses`` body; OpenAIError (400) if it is not one."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise invalid("Invalid value for 'model': expected a model name.", "model")
    settings = _settings(body)
    tools, settings.strict = _tools(body.get("tools"))
    options = _options(body, settings)
    spec = GatewaySpec(
        model=model,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        options=options,
        stream=_bool(body, "stream", False),
    )
    system, turns, results = _input(body.get("input"), settings.previous_response_id is not None)
    if settings.instructions:
        system = settings.instructions + ("\n\n" + system if system else "")
    if not turns and not results:
        raise invalid("Invalid value for 'input': it must hold a message or an item.", "input")
    send = split_send(turns, "input")
    text = "".join(p.get("text", "") for p in send) if send else ""
    lines = text.strip().splitlines()
    completion = Completion(spec, system, turns, send, lines[0][:80] if lines else "Response")
    completion.results = [{"tool_call_id": c, "output": o} for c, o in results]
    return ResponsesRequest(completion, settings)


# -- settings and options ------------------------------------------------------------


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"Invalid type for '{key}': expected a boolean.", key, "invalid_type")
    return value


def _string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"Invalid type for '{key}': expected a string.", key, "invalid_type")
    return value


def _settings(body: dict[str, Any]) -> Settings:
    previous = _string(body, "previous_response_id")
    if previous is not None and parse_response_id(previous) is None:
        raise invalid(
            f"Previous response with id '{previous}' not found.",
            "previous_response_id",
            "previous_response_not_found",
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
        for k, v in metadata.items()
    ) or len(metadata) > 16:  # fmt: skip
        raise invalid(
            "Invalid 'metadata': at most 16 string values (keys up to 64 characters, values "
            "up to 512).",
            "metadata",
        )
    return Settings(
        instructions=_string(body, "instructions"),
        store=_bool(body, "store", True),
        metadata=metadata,
        previous_response_id=previous,
    )


def _options(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The sampling options the upstream gets; the settings echoed get their values."""
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise invalid(f"Invalid type for '{key}': expected a number.", key, "invalid_type")
            out[key] = value
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise invalid(
                "Invalid value for 'max_output_tokens': expected an integer >= 1.",
                "max_output_tokens",
            )
        out["max_tokens"] = settings.max_output_tokens = limit
    if body.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = _bool(body, "parallel_tool_calls", True)
    effort = _reasoning(body.get("reasoning"), settings)
    if effort is not None:
        out["reasoning_effort"] = effort
    response_format = _text_format(body.get("text"), settings)
    if response_format is not None:
        out["response_format"] = response_format
    return out


def _reasoning(raw: Any, settings: Settings) -> str | None:
    """``reasoning.effort`` (the upstream's ``reasoning_effort``); ``summary`` is echoed only."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("Invalid type for 'reasoning': expected an object.", "reasoning")
    effort, summary = raw.get("effort"), raw.get("summary") or raw.get("generate_summary")
    if effort is not None and effort not in _EFFORTS:
        raise invalid(
            f"Invalid value for 'reasoning.effort': expected one of {', '.join(_EFFORTS)}.",
            "reasoning.effort",
        )
    if summary is not None and summary not in _SUMMARIES:
        raise invalid(
            f"Invalid value for 'reasoning.summary': expected one of {', '.join(_SUMMARIES)}.",
            "reasoning.summary",
        )
    settings.reasoning = {"effort": effort, "summary": summary}
    return effort


def _text_format(raw: Any, settings: Settings) -> dict[str, Any] | None:
    """``text.format`` as the upstream's ``response_format`` (None for plain text)."""
    if raw is None:
        return None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt is None and isinstance(raw, dict):
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        settings.text = {"format": {"type": "json_object"}}
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise invalid(
                "Invalid 'text.format.name': a string of letters, digits, _ or -, at most 64 "
                "characters.",
                "text.format.name",
            )
        if not isinstance(schema, dict):
            raise invalid(
                "Invalid type for 'text.format.schema': expected an object.", "text.format.schema"
            )
        described = {"name": name, "schema": schema}
        if isinstance(fmt.get("description"), str):
            described["description"] = fmt["description"]
        if isinstance(fmt.get("strict"), bool):
            described["strict"] = fmt["strict"]
        settings.text = {"format": {"type": "json_schema", **described}}
        return {"type": "json_schema", "json_schema": described}
    raise invalid(
        "Invalid value for 'text.format': expected a type of text, json_object or json_schema.",
        "text.format",
    )


def _tools(raw: Any) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    """Function tools as ``{"name", "description", "parameters"}``, and each one's ``strict``."""
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    tools: list[dict[str, Any]] = []
    strict: dict[str, bool] = {}
    for i, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise invalid(
                f"Invalid value for 'tools[{i}].type': only function tools are supported"
                + (f", not {kind!r}." if isinstance(kind, str) else "."),
                f"tools[{i}].type",
                "unsupported_tool",
            )
        assert isinstance(tool, dict)
        checked = function_tool(tool, f"tools[{i}]")
        tools.append(checked)
        strict[checked["name"]] = tool.get("strict") is not False
    return tools, strict


def _tool_choice(raw: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    """``tool_choice`` in the upstream's (Chat Completions) form."""
    if raw is None:
        return None
    if raw in ("none", "auto", "required"):
        return str(raw)
    name = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(name, str):
        if name not in {t["name"] for t in tools}:
            raise invalid(
                f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.",
                "tool_choice",
            )
        return {"type": "function", "function": {"name": name}}
    raise invalid(
        "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
        "{'type': 'function', 'name': ...}.",
        "tool_choice",
    )


# -- input ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Turns:
    """The turns being built from input items, and the calls still waiting for outputs."""

    system: list[str] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    #: The previous response's calls answered here: (call_id, output).
    results: list[tuple[str, Any]] = field(default_factory=list)
    #: Calls of the input's own function_call items, by call_id.
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether the last turn is an assistant turn a function_call may still join.
    open: bool = False

    def pending(self) -> list[str]:
        return [c for c, call in self.calls.items() if "result" not in call]

    def check_answered(self) -> None:
        if pending := self.pending():
            raise invalid(f"No tool output found for function call {pending[0]}.", "input")


def _input(
    raw: Any, continued: bool
) -> tuple[str | None, list[dict[str, Any]], list[tuple[str, Any]]]:
    """(system text, turns for Runtime.seed, the previous response's answered calls)."""
    if raw is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(raw, str):
        return None, [{"role": "user", "parts": [{"type": "text", "text": raw}]}], []
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'input': expected a string or an array of items.", "input")
    out = _Turns()
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"Invalid type for '{where}': expected an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            _message(out, item, where)
        elif kind == "function_call":
            _function_call(out, item, where)
        elif kind == "function_call_output":
            _function_call_output(out, item, where, continued)
        elif kind != "reasoning":  # the model's own reasoning: not sent back upstream
            raise invalid(
                f"Invalid value for '{where}.type': expected message, function_call, "
                "function_call_output or reasoning.",
                f"{where}.type",
                "unsupported_item",
            )
    out.check_answered()
    return ("\n\n".join(out.system) or None), out.turns, out.results


def _message(out: _Turns, item: dict[str, Any], where: str) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        text = "".join(_texts(content, f"{where}.content", ("input_text",)))
        if text:
            out.system.append(text)
        return
    out.check_answered()
    if role == "user":
        out.turns.append({"role": "user", "parts": _user_parts(content, f"{where}.content")})
        out.open = False
    elif role == "assistant":
        text = "".join(_texts(content, f"{where}.content", ("output_text", "refusal")))
        out.turns.append({"role": "assistant", "text": text, "tool_calls": []})
        out.open = True
    else:
        raise invalid(
            f"Invalid value for '{where}.role': expected one of user, assistant, system or "
            "developer.",
            f"{where}.role",
        )


def _function_call(out: _Turns, item: dict[str, Any], where: str) -> None:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not (isinstance(call_id, str) and call_id and isinstance(name, str)):
        raise invalid(
            f"Invalid value for '{where}': a function_call needs a call_id and a name.", where
        )
    if not isinstance(arguments, str):
        raise invalid(
            f"Invalid type for '{where}.arguments': expected a string.", f"{where}.arguments"
        )
    if call_id in out.calls:
        raise invalid(f"Duplicate call_id '{call_id}' in 'input'.", f"{where}.call_id")
    if not out.open:
        out.check_answered()
        out.turns.append({"role": "assistant", "text": "", "tool_calls": []})
        out.open = True
    call = {"id": call_id, "name": name, "arguments": arguments}
    out.turns[-1]["tool_calls"].append(call)
    out.calls[call_id] = call


def _function_call_output(out: _Turns, item: dict[str, Any], where: str, continued: bool) -> None:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(
            f"Invalid value for '{where}.call_id': expected a string.", f"{where}.call_id"
        )
    output = _output(item.get("output"), f"{where}.output")
    call = out.calls.get(call_id)
    if call is not None:
        if "result" in call:
            raise invalid(
                f"Duplicate function_call_output for call_id '{call_id}'.", f"{where}.call_id"
            )
        call["result"] = output
        out.open = False
        return
    if not continued or out.turns:
        raise invalid(
            f"No tool call found for function call output with call_id {call_id}.",
            f"{where}.call_id",
        )
    if any(c == call_id for c, _ in out.results):
        raise invalid(
            f"Duplicate function_call_output for call_id '{call_id}'.", f"{where}.call_id"
        )
    out.results.append((call_id, output))


def _output(raw: Any, where: str) -> str:
    """A function_call_output's ``output``: a string, or input_text parts joined."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return "".join(_texts(raw, where, ("input_text",)))
    raise invalid(f"Invalid type for '{where}': expected a string.", where, "invalid_type")


def _texts(content: Any, where: str, kinds: tuple[str, ...]) -> list[str]:
    """The text of a string or of parts of the given kinds (a refusal counts as no text)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid(f"Invalid type for '{where}': expected a string or an array.", where)
    out: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "refusal" and kind in kinds:
            continue
        if kind in kinds and isinstance(part.get("text"), str):
            out.append(part["text"])
        else:
            raise invalid(
                f"Invalid content part {where}[{j}]: expected {' or '.join(kinds)}.",
                f"{where}[{j}]",
                "unsupported_content",
            )
    return out


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A user message's content as parts: text, and input_image / input_file as attachments."""
    if not isinstance(content, list):
        return [{"type": "text", "text": t} for t in _texts(content, where, ("input_text",))]
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_text" and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind in ("input_image", "input_file"):
            out.append(_attachment(part, f"{where}[{j}]"))
        else:
            raise invalid(
                f"Invalid content part {where}[{j}]: expected input_text, input_image or "
                "input_file.",
                f"{where}[{j}]",
                "unsupported_content",
            )
    return out


def _attachment(part: dict[str, Any], where: str) -> dict[str, Any]:
    """An ``input_image`` (a data URL or an http(s) URL) or an ``input_file`` with its data."""
    try:
        if part.get("file_id") is not None:
            raise BadAttachment("file ids are not supported; send the data")
        if part["type"] == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise BadAttachment("expected 'image_url', a data URL or an http(s) URL")
            return attachment_part(IMAGE, url=url)
        data, name = part.get("file_data"), part.get("filename")
        if not isinstance(data, str):
            raise BadAttachment("expected 'file_data', the file as a data URL or base64")
        name = name if isinstance(name, str) else None
        if not data.startswith("data:"):  # bare base64: its type from its name
            guessed = mimetypes.guess_type(name or "")[0] or "application/octet-stream"
            data = f"data:{guessed};base64,{data}"
        kind = IMAGE if data.startswith("data:image/") else FILE
        return attachment_part(kind, data=data, name=name)
    except BadAttachment as err:
        raise invalid(f"Invalid content part {where}: {err}.", where, "invalid_content") from None
