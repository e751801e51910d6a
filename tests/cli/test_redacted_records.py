"""How tether redacts a log record (``tether serve``, ``tether worker``, the webhook
handler): what each handler gets to write."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from uvicorn.logging import AccessFormatter

from tether.providers.redaction import Redactor, redact_records

KEY = "sk-proj-Qm7xT2vLk9RzW4nB8cYh3JdF"


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with a handler of its own, added after redaction was installed.

    As a MODULE:APP may do at import: the records it writes are redacted all the same.
    """
    factory = logging.getLogRecordFactory()
    redact_records(Redactor([KEY]))
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = logging.getLogger("test.redacted")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, out
    finally:
        log.removeHandler(handler)
        logging.setLogRecordFactory(factory)


def test_a_handler_added_later_writes_redacted_lines(logger) -> None:
    log, out = logger
    log.debug("< %s: %s", "authorization", f"Bearer {KEY}")
    log.info("upstream said: %s", f"bad key {KEY[:5]}****{KEY[-4:]}")
    assert out.getvalue() == "< authorization: ***\nupstream said: bad key ***\n"


def test_uvicorns_access_formatter_still_gets_its_arguments(logger) -> None:
    """It unpacks ``record.args`` into client, method, path...: they stay, each redacted."""
    log, out = logger
    log.handlers[0].setFormatter(
        AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s')
    )
    args = ("127.0.0.1:5000", "GET", "/v1/sessions/s1/events?token=abc.def", "1.1", 200)
    log.info('%s - "%s %s HTTP/%s" %d', *args)
    assert (
        out.getvalue() == '127.0.0.1:5000 "GET /v1/sessions/s1/events?token=*** HTTP/1.1" 200 OK\n'
    )


def test_a_traceback_quoting_a_key_is_redacted(logger) -> None:
    log, out = logger
    try:
        raise ValueError(f"Illegal header value b'Bearer {KEY}'")
    except ValueError:
        log.exception("request failed")
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "ValueError: Illegal header value b'Bearer ***'" in text
    assert KEY not in text


def test_arguments_that_do_not_fit_the_format_are_shown_redacted(logger) -> None:
    """Otherwise logging's error report would print them to stderr as they are."""
    log, out = logger
    log.warning("one %s, two %s", KEY)
    assert out.getvalue() == "one %s, two %s (arguments: ('***',))\n"
