"""A Messages API request, validated: pure parsing, no I/O.

``POST /v1/messages`` bodies become the front-neutral
:class:`~tether.api.openai.request.Completion` (the session's turns, the last
user message, the tools and sampling options in OpenAI's form, which every
provider takes) plus :attr:`MessagesRequest.native`: the request as the
client sent it, cut down to the documented fields, for an Anthropic upstream
(the least translation: thinking blocks with their signatures and
``cache_control`` reach it unchanged). Anything else a client sends (unknown
fields, credentials, headers) is dropped and never reaches an upstream.
What is refused is refused as Anthropic refuses it, a 400
``invalid_request_error`` (raised as an
:class:`~tether.api.openai.errors.OpenAIError`, rendered by :mod:`.errors`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from tether.agents.gateway import GatewaySpec
from tether.api.completion import Completion, split_send
from tether.api.openai.errors import invalid
from tether.sessions.attachments import FILE, IMAGE, BadAttachment, attachment_part

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: The body fields passed on to an Anthropic upstream (all validated here).
NATIVE_FIELDS = (
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "thinking",
    "stop_sequences", "temperature", "top_p", "top_k", "metadata",
)  # fmt: skip
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


@dataclass(slots=True)
class MessagesRequest:
    """A validated Messages request: the completion to run, and its native form."""

    completion: Completion
    #: The documented fields of the body as sent (``model`` as the client named it).
    native: dict[str, Any]

    @property
    def stream(self) -> bool:
        return self.completion.spec.stream


def parse_messages(body: Any) -> MessagesRequest:
    """Validate a Messages request body; OpenAIError (400) if it is not one."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model: Field required (a model name).", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid("max_tokens: Field required (an integer >= 1).", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean.", "stream")
    tools = _tools(body.get("tools"))
    choice, parallel = _tool_choice(body.get("tool_choice"), tools)
    options: dict[str, Any] = {"max_tokens": max_tokens, **_sampling(body)}
    if parallel is False:
        options["parallel_tool_calls"] = False
    _check_thinking(body.get("thinking"), max_tokens)
    _check_metadata(body.get("metadata"))
    spec = GatewaySpec(model=model, tools=tools, tool_choice=choice, options=options, stream=stream)
    seed = _turns(body.get("messages"))
    send = split_send(seed, "messages")
    text = "".join(p.get("text", "") for p in send) if send else ""
    lines = text.strip().splitlines()
    completion = Completion(
        spec, _system(body.get("system")), seed, send, lines[0][:80] if lines else "Message"
    )
    native = {k: body[k] for k in NATIVE_FIELDS if body.get(k) is not None}
    return MessagesRequest(completion, native)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    """``temperature``, ``top_p`` and ``stop_sequences`` (as ``stop``) in OpenAI's names.

    ``top_k`` has no OpenAI equivalent: it is checked, and only an Anthropic
    upstream gets it (in the native body).
    """
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if not _is_number(value):
                raise invalid(f"{key}: Input should be a valid number.", key)
            out[key] = value
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid("top_k: Input should be an integer >= 0.", "top_k")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stop_sequences: Input should be a list of strings.", "stop_sequences")
        if stops:
            out["stop"] = stops
    return out


def _check_thinking(thinking: Any, max_tokens: int) -> None:
    """``{type: enabled, budget_tokens}`` (at least 1024, below max_tokens) or ``disabled``."""
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return
    if kind != "enabled":
        raise invalid("thinking.type: Input should be 'enabled' or 'disabled'.", "thinking")
    budget = thinking.get("budget_tokens")
    if not _is_int(budget) or budget < 1024:
        raise invalid("thinking.budget_tokens: Input should be an integer >= 1024.", "thinking")
    if budget >= max_tokens:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.", "thinking")


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
        raise invalid("metadata: only 'user_id' is accepted.", "metadata")
    if user is not None and not isinstance(user, str):
        raise invalid("metadata.user_id: Input should be a valid string.", "metadata")


def _system(system: Any) -> str | None:
    """The system prompt: a string, or text blocks (``cache_control`` allowed) joined."""
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    if not isinstance(system, list):
        raise invalid("system: Input should be a string or a list of text blocks.", "system")
    texts: list[str] = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"system.{i}: Input should be a text block.", "system")
        if not isinstance(block.get("text"), str):
            raise invalid(f"system.{i}.text: Input should be a valid string.", "system")
        texts.append(block["text"])
    return "\n\n".join(t for t in texts if t) or None


def _tools(raw: Any) -> list[dict[str, Any]]:
    """Client tools as ``{name, description, parameters}``; server tools are refused."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid("tools: Input should be a valid list.", "tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise invalid(f"tools.{i}: Input should be an object.", "tools")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise invalid(
                f"tools.{i}: server tools ({kind!r}) are not supported by this gateway; "
                "declare client tools with a name and an input_schema.",
                "tools",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise invalid(
                f"tools.{i}.name: a string of letters, digits, _ or -, at most 128 characters.",
                "tools",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid(f"tools.{i}.input_schema: Field required (an object).", "tools")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"tools.{i}.description: Input should be a valid string.", "tools")
        out.append({"name": name, "description": description or "", "parameters": schema})
    return out


def _tool_choice(
    raw: Any, tools: list[dict[str, Any]]
) -> tuple[str | dict[str, Any] | None, bool | None]:
    """Anthropic's ``tool_choice`` in OpenAI's form, and whether parallel calls are allowed."""
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or kind not in ("auto", "any", "tool", "none"):
        raise invalid(
            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'.", "tool_choice"
        )
    disable = raw.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise invalid(
            "tool_choice.disable_parallel_tool_use: Input should be a valid boolean.",
            "tool_choice",
        )
    if kind in ("any", "tool") and not tools:
        raise invalid(f"tool_choice.type '{kind}' requires 'tools'.", "tool_choice")
    parallel = False if disable else None
    if kind != "tool":
        return _TOOL_CHOICES[kind], parallel
    name = raw.get("name")
    if not isinstance(name, str) or name not in {t["name"] for t in tools}:
        raise invalid("tool_choice.name: no tool of that name in 'tools'.", "tool_choice")
    return {"type": "function", "function": {"name": name}}, parallel


def _turns(raw: Any) -> list[dict[str, Any]]:
    """The messages as Runtime.seed's turns (a user turn keeps its ``parts`` for now).

    A user turn's ``tool_result`` blocks answer the ``tool_use`` blocks of the
    assistant turn right before it, each of which must be answered there, as
    Anthropic requires.
    """
    if not isinstance(raw, list) or not raw:
        raise invalid("messages: Input should be a non-empty list.", "messages")
    turns: list[dict[str, Any]] = []
    #: Tool calls of the last assistant turn, by id, waiting for their results.
    pending: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(raw):
        where = f"messages.{i}"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: Input should be 'user' or 'assistant'.", "messages")
        blocks = _blocks(m.get("content"), where)
        if role == "assistant":
            _unanswered(pending)
            turn = _assistant_turn(blocks, where)
            pending = {c["id"]: c for c in turn["tool_calls"]}
            turns.append(turn)
            continue
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(blocks):
            if block.get("type") == "tool_result":
                _answer(block, pending, f"{where}.content.{j}")
            else:
                parts.append(_user_part(block, f"{where}.content.{j}"))
        _unanswered(pending)
        if parts:
            turns.append({"role": "user", "parts": parts})
    _unanswered(pending)
    if not turns:
        raise invalid("messages: at least one message must have content.", "messages")
    return turns


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise invalid(f"{where}.content: Input should be a string or a list of blocks.", where)
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid(f"{where}.content.{j}: Input should be a content block.", where)
    return content


def _unanswered(pending: dict[str, dict[str, Any]]) -> None:
    missing = [
        call_id for call_id, call in pending.items() if "result" not in call and "error" not in call
    ]
    if missing:
        raise invalid(
            "messages: `tool_use` ids were found without `tool_result` blocks immediately "
            f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
            "`tool_result` block in the next message.",
            "messages",
        )
    pending.clear()


def _assistant_turn(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """Text and tool calls; thinking blocks stay in the native body only."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        at = f"{where}.content.{j}"
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
                raise invalid(f"{at}: a tool_use block needs an id and a name.", "messages")
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise invalid(f"{at}.input: Input should be an object.", "messages")
            calls.append({"id": call_id, "name": name, "arguments": arguments})
        elif _is_thinking(block):
            continue
        else:
            raise invalid(
                f"{at}: an assistant turn takes text, tool_use, thinking and "
                "redacted_thinking blocks.",
                "messages",
            )
    return {"role": "assistant", "text": "".join(texts), "tool_calls": calls}


def _is_thinking(block: dict[str, Any]) -> bool:
    """A thinking or redacted_thinking block (for the native body: no session keeps it)."""
    if block["type"] == "thinking":
        return isinstance(block.get("thinking"), str)
    return block["type"] == "redacted_thinking" and isinstance(block.get("data"), str)


def _answer(block: dict[str, Any], pending: dict[str, dict[str, Any]], at: str) -> None:
    """A ``tool_result`` block onto its call: its text as the result (or the error)."""
    call_id = block.get("tool_use_id")
    call = pending.get(call_id) if isinstance(call_id, str) else None
    if call is None or "result" in call or "error" in call:
        raise invalid(
            f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: "
            f"{call_id}. Each `tool_result` block must have a corresponding "
            "`tool_use` block in the previous message.",
            "messages",
        )
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in content
    ):
        text = "".join(b["text"] for b in content)
    else:
        raise invalid(
            f"{at}.content: a string or text blocks (images in tool results are not supported).",
            "messages",
        )
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise invalid(f"{at}.is_error: Input should be a valid boolean.", "messages")
    call["error" if is_error else "result"] = text


def _user_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    """A user block as a session part: text, or an image or document as an attachment."""
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise invalid(f"{at}.text: Input should be a valid string.", "messages")
        return {"type": "text", "text": block["text"]}
    if kind not in ("image", "document"):
        raise invalid(
            f"{at}: a user turn takes text, image, document and tool_result blocks.", "messages"
        )
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{at}.source: Field required (an object).", "messages")
    stype = source.get("type")
    data = source.get("data")
    name = block.get("title") if isinstance(block.get("title"), str) else None
    try:
        if stype == "base64" and isinstance(data, str):
            media = source.get("media_type")
            if not isinstance(media, str):
                raise BadAttachment("source.media_type is required")
            return attachment_part(
                IMAGE if kind == "image" else FILE, media_type=media, data=data, name=name
            )
        if stype == "text" and kind == "document" and isinstance(data, str):
            encoded = base64.b64encode(data.encode()).decode()
            return attachment_part(FILE, media_type="text/plain", data=encoded, name=name)
        if stype == "url" and kind == "image" and isinstance(source.get("url"), str):
            return attachment_part(IMAGE, url=source["url"])
        raise BadAttachment(
            "source must be base64 data with a media_type, plain text (a document) "
            "or a url (an image)"
        )
    except BadAttachment as err:
        raise invalid(f"{at}: {err}.", "messages") from None
