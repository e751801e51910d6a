"""The log of ``tether serve``: its format, and no credential in any line.

Every record the process creates passes through a :class:`Redactor`, at
every level and from every logger: tether's, uvicorn's (its access and
WebSocket lines show request paths with ``?token=``; at debug, websockets
prints each handshake header), httpx's and httpcore's (their debug lines show
requests and the exceptions of the HTTP stack, which can quote a header).

How: a LogRecord factory, not a filter on each handler. uvicorn sets up
handlers of its own, and a MODULE:APP may add or replace handlers when it is
imported; the factory sees every record, whichever handler writes it. The
message, the traceback and the stack are redacted. The arguments are kept,
each redacted, when that gives the same message, since some formatters read
them (uvicorn's access formatter does); otherwise the record carries the
redacted message alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from tether.observability.logs import formatter
from tether.providers.redaction import Redactor

#: Formats tracebacks the way handlers would (they reuse ``exc_text`` once set).
_TRACEBACKS = logging.Formatter()


def configure_logging(level: str, secrets: Iterable[str], log_format: str = "text") -> None:
    """Log at ``level`` to stderr as ``log_format`` (text or json), with ``secrets``
    (and credential fields) redacted, in messages and in the JSON lines' fields."""
    redactor = Redactor(secrets)
    redact_records(redactor)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format, redactor))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def redact_records(redactor: Redactor) -> None:
    """Redact every log record created in this process from now on."""
    make_record = logging.getLogRecordFactory()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact_record(record, redactor)
        return record

    logging.setLogRecordFactory(redacted_record)


def redact_record(record: logging.LogRecord, redact: Redactor) -> None:
    """Rewrite ``record`` in place so that nothing it would print holds a credential."""
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: show both, redacted
        record.msg, record.args = redact(f"{record.msg} (arguments: {record.args!r})"), ()
    else:
        clean = redact(message)
        if clean is not message:
            _rewrite(record, clean, redact)
    if record.exc_info:
        record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _rewrite(record: logging.LogRecord, clean: str, redact: Redactor) -> None:
    """Give ``record`` the message ``clean``, with its arguments if they still make it."""
    if isinstance(record.msg, str) and isinstance(record.args, tuple) and record.args:
        msg = redact(record.msg)
        args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        try:
            same = msg % args == clean
        except (TypeError, ValueError):
            same = False
        if same:
            record.msg, record.args = msg, args
            return
    record.msg, record.args = clean, ()
