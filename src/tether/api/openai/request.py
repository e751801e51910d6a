"""A Chat Completions request, validated: pure parsing, no I/O.

Of a request's fields only the messages, the tools, ``tool_choice`` and the
whitelisted sampling options (``providers.base.SAMPLING_OPTIONS``) are used;
everything else (client credentials, base URLs, unknown fields) is dropped and
never reaches an upstream. What is refused is refused as OpenAI refuses it: an
:class:`~tether.api.openai.errors.OpenAIError` (400) naming the parameter.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from tether.agents.gateway import GatewaySpec
from tether.api.completion import Completion, split_send
from tether.api.openai.errors import invalid
from tether.providers.base import SAMPLING_OPTIONS
from tether.sessions.attachments import (
    FILE,
    IMAGE,
    BadAttachment,
    attachment_part,
    split_data_url,
)

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMBER_OPTIONS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_OPTIONS = ("max_tokens", "max_completion_tokens", "seed")


def _text(content: Any, param: str, *, nullable: bool = False) -> list[str]:
    """The text pieces of a message's ``content`` (a string or text parts)."""
    if content is None:
        if nullable:
            return []
        raise invalid(f"Invalid value for '{param}': expected a string or an array.", param)
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid(f"Invalid type for '{param}': expected a string or an array.", param)
    out: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind == "refusal" and nullable:
            continue
        else:
            raise invalid(
                f"Invalid content part {param}[{j}]: only text parts are supported.",
                f"{param}[{j}]",
                "unsupported_content",
            )
    return out


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    """A user message's content as parts: text, and ``image_url`` / ``file`` as attachments."""
    if not isinstance(content, list):
        return [{"type": "text", "text": t} for t in _text(content, param)]
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("image_url", "file"):
            out.append(_attachment(part, f"{param}[{j}]"))
        elif kind == "text" and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        else:
            raise invalid(
                f"Invalid content part {param}[{j}]: only text, image_url and file parts are "
                "supported.",
                f"{param}[{j}]",
                "unsupported_content",
            )
    return out


def _attachment(part: dict[str, Any], param: str) -> dict[str, Any]:
    """An ``image_url`` part (a data URL or an http(s) URL) or a ``file`` part with its data."""
    try:
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                raise BadAttachment("expected 'image_url.url', a data URL or an http(s) URL")
            return attachment_part(IMAGE, url=url)
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if not isinstance(data, str):
            raise BadAttachment(
                "expected 'file.file_data', the file as a data URL (file ids are not supported)"
            )
        assert isinstance(file, dict)
        name = file.get("filename")
        name = name if isinstance(name, str) else None
        if not data.startswith("data:"):  # bare base64: its type from its name
            guessed = mimetypes.guess_type(name or "")[0]
            data = f"data:{guessed or 'application/octet-stream'};base64,{data}"
        media_type = split_data_url(data)[0]
        kind = IMAGE if media_type.startswith("image/") else FILE
        return attachment_part(kind, data=data, name=name)
    except BadAttachment as err:
        raise invalid(f"Invalid content part {param}: {err}.", param, "invalid_content") from None


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise invalid(
                f"Invalid value for 'tools[{i}]': only function tools are supported.",
                f"tools[{i}]",
            )
        out.append(function_tool(fn, f"tools[{i}].function"))
    return out


def function_tool(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """A function tool's ``{name, description, parameters}``, checked; ``where``: its JSON path."""
    name = fields.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise invalid(
            f"Invalid '{where}.name': a string of letters, digits, _ or -, at most 64 characters.",
            f"{where}.name",
        )
    params = fields.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise invalid(
            f"Invalid type for '{where}.parameters': expected an object.", f"{where}.parameters"
        )
    description = fields.get("description")
    return {
        "name": name,
        "description": description if isinstance(description, str) else "",
        "parameters": params,
    }


def _tool_choice(raw: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    if raw is None:
        return None
    if not tools:
        raise invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    if raw in ("none", "auto", "required"):
        return str(raw)
    name = (raw.get("function") or {}).get("name") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(name, str):
        if name not in {t["name"] for t in tools}:
            raise invalid(
                f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.",
                "tool_choice",
            )
        return {"type": "function", "function": {"name": name}}
    raise invalid(
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
            raise invalid(f"Invalid type for '{key}'.", key, "invalid_type")
        out[key] = value
    return out


def parse_completion(body: Any) -> Completion:
    """Validate a Chat Completions request body; OpenAIError (400) if it is not one."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    model = _model(body.get("model"))
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid(
            "Invalid value for 'messages': expected a non-empty array.", "messages", "empty_array"
        )
    stream, stream_options = _streaming(body.get("stream"), body.get("stream_options"))
    _check_n(body.get("n"))
    tools = _tools(body.get("tools"))
    spec = GatewaySpec(
        model=model,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        options=_options(body),
        stream=stream,
        include_usage=bool((stream_options or {}).get("include_usage")),
    )
    system, turns = _turns(raw_messages)
    if not turns:
        raise invalid(
            "Invalid value for 'messages': it must hold a user or assistant message.", "messages"
        )
    send = split_send(turns, "messages")
    text = "".join(p.get("text", "") for p in send) if send else ""
    lines = text.strip().splitlines()
    return Completion(spec, system, turns, send, lines[0][:80] if lines else "Chat completion")


def _model(model: Any) -> str:
    if model is None:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise invalid("Invalid value for 'model': expected a model name.", "model")
    return model


def _streaming(stream: Any, stream_options: Any) -> tuple[bool, dict[str, Any] | None]:
    """``stream`` and ``stream_options``, checked against each other."""
    if stream is not None and not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    if stream_options is not None:
        if not stream:
            raise invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(stream_options, dict):
            raise invalid(
                "Invalid type for 'stream_options': expected an object.", "stream_options"
            )
    return bool(stream), stream_options


def _check_n(n: Any) -> None:
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise invalid("Invalid value for 'n': expected an integer >= 1.", "n")
        if n > 1:
            raise invalid("n > 1 is not supported by this server.", "n", "unsupported_value")


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
            raise invalid(f"Invalid type for '{where}': expected an object.", where)
        role = m.get("role")
        if role != "tool" and pending:
            raise invalid(
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
            turns.append(
                {"role": "user", "parts": _user_parts(m.get("content"), f"{where}.content")}
            )
        elif role == "assistant":
            calls = _assistant_calls(m.get("tool_calls"), where)
            text = "".join(_text(m.get("content"), f"{where}.content", nullable=True))
            turns.append({"role": "assistant", "text": text, "tool_calls": calls})
            pending = {c["id"]: c for c in calls}
            pending_at = i
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceding message with 'tool_calls'.",
                    f"{where}.role",
                )
            pending.pop(call_id)["result"] = "".join(_text(m.get("content"), f"{where}.content"))
        else:
            raise invalid(
                f"Invalid value for '{where}.role': expected one of system, developer, user, "
                "assistant or tool.",
                f"{where}.role",
            )
    if pending:
        raise invalid(
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
        raise invalid(f"Invalid type for '{where}.tool_calls': expected an array.")
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
            raise invalid(
                f"Invalid value for '{where}.tool_calls[{j}]': expected an id and a function "
                "with a name and arguments.",
                f"{where}.tool_calls[{j}]",
            )
        assert isinstance(call, dict) and isinstance(fn, dict)
        calls.append({"id": call["id"], "name": fn["name"], "arguments": fn.get("arguments", "")})
    return calls
