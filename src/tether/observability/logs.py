"""The server log's two formats, and the structured fields a line may carry.

A line that has more to say than its message (a run's end, a request in the
access log) passes its fields as ``extra=fields(...)``. The text format
prints the message alone (it already says the same, for a person); the JSON
format prints one object per line: ``time``, ``level``, ``logger``,
``message``, then the fields, for a log pipeline to index.

The fields are added to a record after the process's log record factory ran
(it redacts messages: ``tether.providers.redaction.redact_records``), so the JSON formatter
redacts their string values itself with the redactor it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS: Final = ("text", "json")
#: The record attribute that holds a line's structured fields.
_FIELDS: Final = "tether_fields"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the line's structured fields (None values are left out)."""
    return {_FIELDS: {k: v for k, v in values.items() if v is not None}}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the fields, any traceback."""

    def __init__(self, redact: Callable[[str], str] = str) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, _FIELDS, {}).items():
            line.setdefault(key, self._redact(value) if isinstance(value, str) else value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def formatter(kind: str, redact: Callable[[str], str] = str) -> logging.Formatter:
    """The formatter of ``--log-format`` ``kind`` (text or json)."""
    if kind == "json":
        return JsonFormatter(redact)
    return logging.Formatter(TEXT_FORMAT)
