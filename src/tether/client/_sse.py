"""An incremental Server-Sent Events decoder (the WHATWG event-stream format).

It sees comments too (``: keep-alive``), which the client counts as proof
that a connection is alive. An event is only produced once its terminating
blank line has arrived, so a connection cut mid-event yields nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str
    #: The last event id at dispatch (it carries over from earlier events).
    id: str | None


@dataclass(slots=True)
class SSEComment:
    text: str


class SSEDecoder:
    def __init__(self) -> None:
        self._buf = b""
        self._skip_lf = False
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self.last_id: str | None = None
        #: Reconnection time the server asked for, in milliseconds.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent | SSEComment]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.splitlines(keepends=True)
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self._buf = lines.pop()
        else:
            self._buf = b""
        if lines and lines[-1].endswith(b"\r"):
            self._skip_lf = True
        out: list[SSEEvent | SSEComment] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if self._first:
                self._first = False
                line = line.removeprefix("\ufeff")
            item = self._line(line)
            if item is not None:
                out.append(item)
        return out

    def _line(self, line: str) -> SSEEvent | SSEComment | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._data = []
            self._event = ""
            return event
        if line.startswith(":"):
            return SSEComment(line[1:].strip())
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None
