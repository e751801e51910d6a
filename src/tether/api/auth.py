"""Who is calling: tether keys, and short-lived read tokens for browsers.

With keys configured, every request carries ``Authorization: Bearer <key>``;
what a key creates (sessions, streams) belongs to it and is invisible (404) to
any other. Stored records name a key by its identity (a hash), never the key.

A browser EventSource cannot send headers, so a key holder can mint a *read
token* that lets ``?token=`` read one resource (a session, or one stream)
until it expires. A token is opaque: the resource, the owner and the expiry
are sealed with AES-GCM under a key derived from ``TETHER_SECRET`` (or, when
that is unset, from random bytes chosen at start-up, so tokens then last no
longer than the process and are not accepted by other replicas). A token
whose key has since been removed from ``TETHER_API_KEYS`` is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: A token lives this long unless its minter asks for less.
TOKEN_TTL = 3600.0
MIN_SECRET_BYTES = 32
_TOKEN_PREFIX = "tt1."
_AAD = b"tether read token v1"
_NONCE = 12


class Unauthorized(Exception):
    """No key, a wrong key, or a read token used beyond what it may read."""

    code = "unauthorized"


class ConfigError(ValueError):
    """The auth configuration is unusable; the message names the variable, never its value."""


def key_identity(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def session_resource(session_id: str) -> str:
    return f"session:{session_id}"


def stream_resource(store_path: str) -> str:
    return f"stream:{store_path}"


@dataclass(frozen=True, slots=True)
class Caller:
    #: Identity that owns sessions and streams; None when auth is off (everything visible).
    owner: str | None
    #: Set for a read token: the one resource it may read (``session_resource``
    #: or ``stream_resource``); such a caller may do nothing else.
    resource: str | None = None

    @property
    def read_only(self) -> bool:
        return self.resource is not None

    def may_read(self, resource: str) -> bool:
        """False only for a read token that names another resource."""
        return self.resource is None or self.resource == resource


class Auth:
    def __init__(self, keys: Iterable[str] = (), secret: bytes | None = None) -> None:
        if secret is not None and len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"TETHER_SECRET must be at least {MIN_SECRET_BYTES} bytes long "
                f"(it is {len(secret)}); e.g. `openssl rand -hex 32`"
            )
        self._ids = {_digest(k): key_identity(k) for k in keys}
        self._identities = frozenset(self._ids.values())
        self.enabled = bool(self._ids)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AAD)
        self._aead = AESGCM(hkdf.derive(secret or os.urandom(32)))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Auth:
        env = os.environ if env is None else env
        keys = [k.strip() for k in env.get("TETHER_API_KEYS", "").split(",") if k.strip()]
        secret = env.get("TETHER_SECRET")
        return cls(keys, secret.encode() if secret else None)

    def caller(self, authorization: str | None, token: str | None = None) -> Caller:
        if not self.enabled:
            return Caller(None)
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value:
                ident = self._ids.get(_digest(value.strip()))
                if ident is not None:
                    return Caller(ident)
            raise Unauthorized("invalid API key")
        if token:
            return self._open(token)
        raise Unauthorized("missing Authorization: Bearer <key>")

    def read_token(
        self, resource: str, owner: str | None, ttl: float = TOKEN_TTL
    ) -> tuple[str, float]:
        """A token that reads ``resource`` as ``owner`` for ``ttl`` seconds; and its expiry."""
        expires = time.time() + ttl
        payload = orjson.dumps({"r": resource, "o": owner, "x": expires})
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, payload, _AAD)
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("="), expires

    def _open(self, token: str) -> Caller:
        if not token.startswith(_TOKEN_PREFIX) or len(token) > 4096:
            raise Unauthorized("malformed read token")
        raw = token[len(_TOKEN_PREFIX) :]
        try:
            sealed = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            payload = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], _AAD)
            claims = orjson.loads(payload)
            resource, owner, expires = str(claims["r"]), claims["o"], float(claims["x"])
        except (ValueError, InvalidTag, KeyError, TypeError):
            raise Unauthorized("invalid read token") from None
        if time.time() > expires:
            raise Unauthorized("read token expired")
        if owner not in self._identities:
            raise Unauthorized("invalid read token")  # its key was revoked
        return Caller(owner, resource=resource)


def _digest(key: str) -> bytes:
    """Keys are looked up by a digest, so comparing them takes the same time whatever they hold."""
    return hmac.new(b"k", key.encode(), "sha256").digest()
