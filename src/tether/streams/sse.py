"""Server-Sent Events frames for stream reads (protocol section 5.7)."""

from __future__ import annotations

import base64
import re

from tether.store.base import is_json, media_type

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")

JSON, TEXT, BASE64 = "json", "text", "base64"


def encoding_for(content_type: str) -> str:
    """JSON arrays for JSON streams, lines for text, base64 for everything else."""
    if is_json(content_type):
        return JSON
    if media_type(content_type).startswith("text/"):
        return TEXT
    return BASE64


def data_frame(chunks: list[bytes], encoding: str) -> bytes:
    if encoding == JSON:
        return b"event: data\ndata:[" + b",".join(chunks) + b"]\n\n"
    payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if encoding == BASE64:
        return b"event: data\ndata:" + base64.b64encode(payload) + b"\n\n"
    # Every line break in the payload starts a new data line, so a payload can
    # never end the event early or forge an event of its own.
    lines = _LINE_BREAK.split(payload)
    return b"event: data\n" + b"".join([b"data:" + line + b"\n" for line in lines]) + b"\n"


def control_frame(next_offset: str, cursor: str | None, up_to_date: bool, closed: bool) -> bytes:
    parts = [b'event: control\ndata:{"streamNextOffset":"', next_offset.encode(), b'"']
    if closed:
        parts.append(b',"streamClosed":true')
    elif cursor is not None:
        parts += [b',"streamCursor":"', cursor.encode(), b'"']
    if up_to_date:
        parts.append(b',"upToDate":true')
    parts.append(b"}\n\n")
    return b"".join(parts)


HEARTBEAT = b": keep-alive\n\n"


def cut_off_reason(limit: int, resume_offset: str) -> str:
    """Why a reader that fell too far behind was cut off (under 123 bytes: a close reason)."""
    return f"cut off: more than {limit} bytes were waiting; resume from offset {resume_offset}"


def cut_off_comment(limit: int, resume_offset: str) -> bytes:
    """The last words to a reader that fell too far behind (before its response ends)."""
    return f": {cut_off_reason(limit, resume_offset)}\n\n".encode()
