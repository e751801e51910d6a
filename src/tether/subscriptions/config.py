"""A subscription's configuration: parsed from a PUT body, normalized, and hashed.

Re-confirming a subscription compares the hash of the normalized
configuration (PROTOCOL.md section 6.2): ``type``, ``pattern``, the sorted
explicit ``streams``, the delivery settings (``webhook.url`` or
``wake_stream``), ``lease_ttl_ms`` and ``description``. Explicit streams added
later through ``POST .../streams`` are links, not configuration, so they do not
change the hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from tether.subscriptions.patterns import BadPattern, Glob

WEBHOOK = "webhook"
PULL_WAKE = "pull-wake"
TYPES = (WEBHOOK, PULL_WAKE)
LEASE_TTL_MIN_MS = 1_000
LEASE_TTL_MAX_MS = 600_000
LEASE_TTL_DEFAULT_MS = 30_000
#: Control paths: no pattern or stream may name them.
RESERVED = "__ds"
_FIELDS = {"type", "pattern", "streams", "webhook", "wake_stream", "lease_ttl_ms", "description"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
MAX_STREAMS = 1000
MAX_DESCRIPTION = 1024


class BadConfig(ValueError):
    """A configuration the server refuses (400); the message names the field."""


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """What a client asked for, in the caller's names (not store paths)."""

    type: str
    pattern: str | None
    #: Sorted, without duplicates.
    streams: tuple[str, ...]
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    def normalized(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "pattern": self.pattern,
            "streams": list(self.streams),
            "webhook": None if self.webhook_url is None else {"url": self.webhook_url},
            "wake_stream": self.wake_stream,
            "lease_ttl_ms": self.lease_ttl_ms,
            "description": self.description,
        }

    def digest(self) -> str:
        """The hash re-confirmation compares."""
        body = orjson.dumps(self.normalized(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()

    @property
    def glob(self) -> Glob | None:
        return None if self.pattern is None else Glob(self.pattern)


def check_stream_name(name: object, field: str) -> str:
    """A stream-root-relative path a subscription may name, or BadConfig."""
    if not isinstance(name, str) or not name:
        raise BadConfig(f"{field} must be a non-empty stream path")
    if len(name) > 1024 or _CONTROL.search(name):
        raise BadConfig(f"{field} is not a valid stream path")
    if any(seg in ("", ".", "..") for seg in name.split("/")):
        raise BadConfig(f"{field}: stream path segments must be non-empty names")
    if name.split("/", 1)[0] == RESERVED:
        raise BadConfig(f"{field}: paths under {RESERVED}/ are reserved for control APIs")
    return name


def parse_stream_list(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BadConfig(f"{field} must be a list of stream paths")
    if len(value) > MAX_STREAMS:
        raise BadConfig(f"{field} may name at most {MAX_STREAMS} streams")
    return tuple(sorted({check_stream_name(v, f"{field}[]") for v in value}))


def parse_config(body: bytes) -> SubscriptionConfig:
    """The configuration a PUT body asks for, or BadConfig saying what is wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadConfig("the body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise BadConfig("the body must be a JSON object")
    if unknown := sorted(set(doc) - _FIELDS):
        raise BadConfig(f"unknown field {unknown[0]!r}")
    kind = doc.get("type")
    if kind is None:
        raise BadConfig("type is required: 'webhook' or 'pull-wake'")
    if kind not in TYPES:
        raise BadConfig(f"type must be 'webhook' or 'pull-wake', not {kind!r}")
    pattern = _pattern(doc.get("pattern"))
    streams = parse_stream_list(doc["streams"], "streams") if "streams" in doc else ()
    if pattern is None and not streams:
        raise BadConfig("give a pattern, streams, or both: a subscription needs streams to follow")
    webhook_url = _webhook_url(doc.get("webhook"))
    wake_stream = doc.get("wake_stream")
    if wake_stream is not None:
        wake_stream = check_stream_name(wake_stream, "wake_stream")
    if kind == WEBHOOK and webhook_url is None:
        raise BadConfig("a webhook subscription needs webhook.url")
    if kind == PULL_WAKE and wake_stream is None:
        raise BadConfig("a pull-wake subscription needs wake_stream (a JSON stream you created)")
    ttl = _lease_ttl(doc.get("lease_ttl_ms", LEASE_TTL_DEFAULT_MS))
    description = doc.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise BadConfig(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    return SubscriptionConfig(kind, pattern, streams, webhook_url, wake_stream, ttl, description)


def _pattern(pattern: object) -> str | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise BadConfig("pattern must be a string")
    try:
        Glob(pattern)
    except BadPattern as err:
        raise BadConfig(str(err)) from None
    check_stream_name(pattern.replace("*", "x"), "pattern")
    return pattern


def _lease_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise BadConfig("lease_ttl_ms must be an integer number of milliseconds")
    if not LEASE_TTL_MIN_MS <= ttl <= LEASE_TTL_MAX_MS:
        raise BadConfig(
            f"lease_ttl_ms must be from {LEASE_TTL_MIN_MS} (1 s) to {LEASE_TTL_MAX_MS} (10 min)"
        )
    return ttl


def _webhook_url(webhook: object) -> str | None:
    if webhook is None:
        return None
    if not isinstance(webhook, dict) or set(webhook) - {"url"}:
        raise BadConfig("webhook must be an object with one field, url")
    url = webhook.get("url")
    if not isinstance(url, str) or not url:
        raise BadConfig("webhook.url must be a URL")
    return url
