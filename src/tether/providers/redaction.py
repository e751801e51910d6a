"""Credentials in text: every form of a known secret, and credential-shaped fields.

Why: a key leaks in more forms than its own. Upstream errors and dashboards
show it masked (``sk-ab****wxyz``), HTTP Basic auth carries it in base64
(alone or as ``user:key``), URLs carry it percent-encoded, and debug logs
print request lines and headers whatever they hold: a read token in
``?token=``, an unknown client's ``Authorization: Bearer ...``.
:class:`Redactor` finds all of these and replaces each with ``***``; a
text without any comes back unchanged (the same object).

:func:`check_credential` is the other half: a credential with a control
character in it (the newline a key file ends with) would be sent as a
different header, or break one, and would not be found in text whose
writer escapes it; such a value is refused rather than silently stripped.

:func:`redact_records` applies a :class:`Redactor` to every log record of the
process, whichever logger creates it and whichever handler writes it:
``tether serve`` and ``tether worker`` install it (tether.cli.log_redaction),
and so does the webhook handler that uvicorn runs
(tether.agents.webhook_handler), which has no CLI of its own.

How: a LogRecord factory, not a filter on each handler. uvicorn sets up
handlers of its own, and a MODULE:APP may add or replace handlers when it is
imported; the factory sees every record, whichever handler writes it. The
message, the traceback and the stack are redacted. The arguments are kept,
each redacted, when that gives the same message, since some formatters read
them (uvicorn's access formatter does); otherwise the record carries the
redacted message alone.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"

#: Keys shorter than this are hidden verbatim only: their masked and base64
#: forms would be a few characters long and match ordinary text.
MIN_FORM_LENGTH = 8

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_URLSAFE = str.maketrans("+/", "-_")
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_PADDING = re.compile(r"=*")
#: Characters a masked key's visible ends may be made of.
_KEY_CHARS = re.compile(r"[^\s'\"`()\[\]{}<>,;*.…•]*")

# A field whose name ends in one of these words holds a credential: ``Authorization``,
# ``X-Api-Key``, ``Set-Cookie``, ``access_token``, ``client_secret``... The word starts
# the name or follows a character that is not a letter or a digit (not ``monkey``).
_NAME_ENDS = ("authorization", "cookie", "token", "secret", "password", "apikey", "key")
#: A field's value, right after its name (in lower-cased text).
_FIELD_VALUE = re.compile(
    # 'authorization': 'v' (a dict), (b'authorization', b'v') (header tuples), "token": "v"
    r"['\"][ \t]*[:,][ \t]*b?['\"]([^'\"]+)"
    # authorization: v (a header line; the value runs to the end of the line)
    r"|[ \t]*:[ \t]*(\S[^\r\n]*)"
    # token=v (a query parameter, a key=value pair)
    r"|=([^&\s'\"]+)"
)
_BEARER_VALUE = re.compile(r"[ \t]+([\w.~+/=-]+)")
_USERINFO = re.compile(r"://[^/\s:@]*:([^/\s@]+)@")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
#: What stands for the hidden middle of a masked key.
_MASK_RUN = re.compile(r"\*{2,}|\.{2,}|[…•]+")
_MASK_STARTS = ("**", "..", "…", "•")
#: Formats tracebacks the way handlers would (they reuse ``exc_text`` once set).
_TRACEBACKS = logging.Formatter()


def check_credential(what: str, value: str) -> None:
    """ValueError naming ``what`` (never ``value``) if ``value`` holds a control character."""
    if _CONTROL.search(value):
        raise ValueError(
            f"{what} contains a control character (a trailing newline or carriage "
            "return, as a key file or an env file can leave); remove it"
        )


def literal_forms(secret: str) -> set[str]:
    """The secret itself and its percent-encoded forms (upper- and lower-case hex)."""
    forms = {secret}
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded))
    return forms


def base64_cores(secret: str) -> set[str]:
    """What every base64 text that encodes ``secret`` contains, whatever surrounds it.

    The characters of an encoding that depend on the secret's bytes only, for
    each of the three alignments the secret can start at (``user:key`` puts it
    at any), in the standard and the URL-safe alphabets.
    """
    raw = secret.encode()
    cores: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        # Character i holds bits [6i, 6i+6); the secret's are [8 shift, 8 (shift + len)).
        core = encoded[(8 * shift + 5) // 6 : 8 * (shift + len(raw)) // 6]
        cores.update((core, core.translate(_URLSAFE)))
    return cores


class Redactor:
    """Replaces credentials in text with ``***``.

    ``secrets`` are hidden in every form (verbatim, percent-encoded, base64,
    masked); with ``credential_fields``, so is the value of any field that
    names a credential (``Authorization: ...``, ``?token=...``, ``Bearer ...``,
    ``'x-api-key': '...'``, a URL's password), whoever's it is.
    """

    def __init__(self, secrets: Iterable[str], *, credential_fields: bool = True) -> None:
        values = {s for s in secrets if s}
        #: Keys long enough for their masked forms to be told from ordinary text.
        self._maskable = sorted(s for s in values if len(s) >= MIN_FORM_LENGTH)
        literals = set().union(*(literal_forms(s) for s in values))
        cores = set().union(*(base64_cores(s) for s in self._maskable)) - literals
        self._fields = credential_fields
        self._cores = frozenset(cores)
        #: Any form of any secret, longest first (a secret inside another is hidden whole).
        self._forms = re.compile(_alternation(literals | cores)) if literals else None

    def __call__(self, text: str) -> str:
        spans = self._spans(text)
        if not spans:
            return text
        out: list[str] = []
        end = 0
        for start, stop in _merged(spans):
            out.append(text[end:start])
            out.append(MASK)
            end = stop
        out.append(text[end:])
        return "".join(out)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where the credentials are in ``text``.

        Each detector has a cheap test first (a search, or ``in`` on a few
        words): most log lines hold nothing, and leave after about a
        microsecond with a few keys (benchmarks/bench_log_redaction.py).
        """
        spans: list[tuple[int, int]] = []
        if self._forms is not None and self._forms.search(text):
            spans.extend(self._form_span(text, m) for m in self._forms.finditer(text))
        if self._fields:
            spans.extend(_field_spans(text))
        if self._maskable:
            for start in _MASK_STARTS:
                if start in text:
                    found = (self._masked_key(text, *m.span()) for m in _MASK_RUN.finditer(text))
                    spans.extend(span for span in found if span)
                    break
        return spans

    def _form_span(self, text: str, m: re.Match[str]) -> tuple[int, int]:
        start, stop = m.span()
        if m[0] in self._cores:
            # The whole base64 word, not just the part that gave it away.
            while start > 0 and text[start - 1] in _BASE64_CHARS:
                start -= 1
            while stop < len(text) and text[stop] in _BASE64_CHARS:
                stop += 1
            stop = _PADDING.match(text, stop).end()  # type: ignore[union-attr]
        return start, stop

    def _masked_key(self, text: str, start: int, stop: int) -> tuple[int, int] | None:
        """The span of ``<key prefix><mask><key suffix>`` around a mask run, if any.

        At least two characters of the key's end, and four of the key in all,
        must show: fewer would match ordinary text.
        """
        left_start = start
        while left_start > 0 and _KEY_CHARS.fullmatch(text[left_start - 1]):
            left_start -= 1
        left = text[left_start:start]
        right = text[stop : _KEY_CHARS.match(text, stop).end()]  # type: ignore[union-attr]
        best: tuple[int, int] | None = None
        for key in self._maskable:
            head = next((len(left) - i for i in range(len(left)) if key.startswith(left[i:])), 0)
            tail = next((j for j in range(len(right), 0, -1) if key.endswith(right[:j])), 0)
            if tail >= 2 and head + tail >= 4 and (best is None or head + tail > sum(best)):
                best = (head, tail)
        if best is None:
            return None
        return start - best[0], stop + best[1]


def _field_spans(text: str) -> list[tuple[int, int]]:
    """Where the values of credential fields are in ``text``.

    Why ``str.find`` and not one regex: a pattern that tries a dozen words at
    every position costs about 3 us on a short line; finding the words and
    matching only after them costs a fraction of that.
    """
    lowered = _lower(text)
    spans: list[tuple[int, int]] = []
    for word in _NAME_ENDS:
        at = lowered.find(word)
        while at >= 0:
            if at == 0 or lowered[at - 1] not in _ALNUM:
                m = _FIELD_VALUE.match(lowered, at + len(word))
                if m is not None:
                    spans.append(m.span(m.lastindex or 0))
            at = lowered.find(word, at + 1)
    at = lowered.find("bearer")
    while at >= 0:
        if at == 0 or not (lowered[at - 1] in _ALNUM or lowered[at - 1] == "_"):
            m = _BEARER_VALUE.match(lowered, at + len("bearer"))
            if m is not None:
                spans.append(m.span(1))
        at = lowered.find("bearer", at + 1)
    if "://" in text:
        spans.extend(m.span(1) for m in _USERINFO.finditer(text))
    return spans


def _lower(text: str) -> str:
    """``text`` lower-cased character for character, so that positions stay the same."""
    lowered = text.lower()
    if len(lowered) == len(text):  # lower() never shortens a character
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _alternation(literals: Iterable[str]) -> str:
    # Longest first, so a secret that contains another is matched whole.
    return "|".join(re.escape(s) for s in sorted(literals, key=lambda s: (-len(s), s)))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one, in order."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


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
