"""Who is calling: tether keys, and short-lived read tokens for browsers.

With keys configured, every request carries ``Authorization: Bearer <key>``;
a session belongs to the key that created it and is invisible (404) to any
other. Sessions store the key's identity (a hash), never the key. A browser
EventSource cannot send headers, so a key holder can mint a read token that
lets ``?token=`` read one session's events until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass


class Unauthorized(Exception):
    pass


def key_identity(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Caller:
    #: Identity that owns sessions; None when auth is off (everything visible).
    owner: str | None
    #: Set for a read token: the one session it may read.
    session_only: str | None = None


class Auth:
    def __init__(self, keys: Iterable[str] = (), secret: bytes | None = None) -> None:
        self._ids = {hmac.new(b"k", k.encode(), "sha256").digest(): key_identity(k) for k in keys}
        self.enabled = bool(self._ids)
        self._secret = secret or os.urandom(32)

    @classmethod
    def from_env(cls) -> Auth:
        raw = os.environ.get("TETHER_API_KEYS", "")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        secret = os.environ.get("TETHER_SECRET")
        return cls(keys, secret.encode() if secret else None)

    def caller(self, authorization: str | None, token: str | None = None) -> Caller:
        if not self.enabled:
            return Caller(None)
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value:
                ident = self._ids.get(hmac.new(b"k", value.strip().encode(), "sha256").digest())
                if ident is not None:
                    return Caller(ident)
            raise Unauthorized("invalid API key")
        if token:
            return self._read_token(token)
        raise Unauthorized("missing Authorization: Bearer <key>")

    def read_token(
        self, session_id: str, owner: str | None, ttl: float = 3600
    ) -> tuple[str, float]:
        expires = time.time() + ttl
        body = f"{session_id}|{owner or ''}|{int(expires)}".encode()
        sig = hmac.new(self._secret, body, "sha256").digest()[:18]
        token = (
            base64.urlsafe_b64encode(body).decode().rstrip("=")
            + "."
            + (base64.urlsafe_b64encode(sig).decode().rstrip("="))
        )
        return token, expires

    def _read_token(self, token: str) -> Caller:
        try:
            body_b64, sig_b64 = token.split(".", 1)
            body = base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4))
            sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
            session_id, owner, expires = body.decode().split("|")
        except ValueError:
            raise Unauthorized("malformed read token") from None
        good = hmac.new(self._secret, body, "sha256").digest()[:18]
        if not hmac.compare_digest(sig, good):
            raise Unauthorized("invalid read token")
        if time.time() > int(expires):
            raise Unauthorized("read token expired")
        return Caller(owner or None, session_only=session_id)
