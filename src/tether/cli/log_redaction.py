"""The log of ``tether serve`` and ``tether worker``: its level, its format, and no
credential in any line.

Every record the process creates passes through a :class:`Redactor` of the
secrets the command knows (tether.providers.redaction.redact_records), at
every level and from every logger: tether's, uvicorn's (its access and
WebSocket lines show request paths with ``?token=``; at debug, websockets
prints each handshake header), httpx's and httpcore's (their debug lines show
requests and the exceptions of the HTTP stack, which can quote a header).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tether.observability.logs import formatter
from tether.providers.redaction import Redactor, redact_records


def configure_logging(level: str, secrets: Iterable[str], log_format: str = "text") -> None:
    """Log at ``level`` to stderr as ``log_format`` (text or json), with ``secrets``
    (and credential fields) redacted, in messages and in the JSON lines' fields."""
    redactor = Redactor(secrets)
    redact_records(redactor)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format, redactor))
    logging.basicConfig(level=level.upper(), handlers=[handler])
