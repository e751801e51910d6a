"""A response's input, as the Responses API's items, read back from its session: pure.

A response's input is what its request placed before its run's answer: the
messages on its branch back to the previous response's answer (or to the
conversation's start), and the outputs of that answer's function calls. The
instructions are the system prompt, not items. Images and files are named,
not carried: their bytes are at ``/v1/sessions/{id}/attachments/{part_id}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from tether.sessions import events as ev
from tether.sessions.fold import Message, Part, SessionFold


def input_items(fold: SessionFold, run_id: str) -> list[dict[str, Any]]:
    """The input items of run ``run_id``'s response, oldest first."""
    answer = fold.answer_of(run_id)
    if answer is None:
        return []
    before: list[Message] = []
    cur = answer.parent_id
    while cur is not None:
        msg = fold.messages[cur]
        if msg.role == "assistant" and msg.run_id is not None:  # an earlier response's answer
            return _outputs(msg) + [i for m in reversed(before) for i in _items(m)]
        before.append(msg)
        cur = msg.parent_id
    return [i for m in reversed(before) for i in _items(m)]


def _items(msg: Message) -> list[dict[str, Any]]:
    if msg.role == "user":
        content = [_user_part(p) for p in msg.parts]
        return [_message(msg.id, "user", content)]
    out: list[dict[str, Any]] = []
    if text := msg.text:
        out.append(_message(msg.id, "assistant", [{"type": "output_text", "text": text,
                                                    "annotations": []}]))  # fmt: skip
    for part in msg.parts:
        if part.kind == ev.TOOL_CALL:
            value = part.value
            arguments = value if isinstance(value, str) else orjson.dumps(value).decode()
            out.append(
                {
                    "id": "fc_" + _suffix(part),
                    "type": "function_call",
                    "status": "completed",
                    "call_id": part.tool_call_id,
                    "name": part.tool_name,
                    "arguments": arguments,
                }
            )
    return out + _outputs(msg)


def _outputs(msg: Message) -> list[dict[str, Any]]:
    """The function_call_output items of a message's answered calls."""
    return [
        {
            "id": "fco_" + _suffix(part),
            "type": "function_call_output",
            "status": "completed",
            "call_id": part.tool_call_id,
            "output": _output(part),
        }
        for part in msg.parts
        if part.kind == ev.TOOL_CALL and part.answered
    ]


def _output(part: Part) -> str:
    if part.error is not None:
        return part.error
    return part.result if isinstance(part.result, str) else orjson.dumps(part.result).decode()


def _user_part(part: Part) -> dict[str, Any]:
    if part.attachment is None:
        return {"type": "input_text", "text": part.text}
    if part.kind == "image":
        return {"type": "input_image", "detail": "auto", "image_url": part.attachment.get("url")}
    return {"type": "input_file", "filename": part.attachment.get("name")}


def _message(message_id: str, role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": role, "status": "completed",
            "content": content}  # fmt: skip


def _suffix(part: Part) -> str:
    return part.id.removeprefix("msg_").replace(":", "_")
