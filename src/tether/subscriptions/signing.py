"""The server's Ed25519 webhook signing keys: made once, kept in the store, rotated on demand.

Webhook receivers verify each delivery with a public key they fetch from the JWK Set
at ``__ds/jwks.json`` (PROTOCOL.md 6.5, 7.1). The keys are records in the store, so
the SQLite file or Redis keeps them across restarts and every replica sharing the
store signs with the same key.

A key's ``kid`` is ``ds_`` and the start of its RFC 7638 JWK thumbprint: derived
from the key material, so it is stable and names one key. Rotating makes a new
active key and retires the old one: the retired key signs nothing more, its
private half is erased at once, and its public half stays in the JWK Set for
:data:`RETIRED_KEY_WINDOW` (every signature it made is out of a receiver's replay
window by then), after which it drops out.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tether.store.base import Store

#: The records namespace holding one record per key, by kid.
NAMESPACE = "webhook-keys"
#: The store lease that serializes making the first key and rotating.
_LOCK = "webhook-keys"
_LOCK_TTL = 30.0
#: How long a process waits for another one that makes the first key.
_LOCK_WAIT = 0.05
#: Seconds a receiver accepts a signature after its timestamp (PROTOCOL.md 7.1).
REPLAY_WINDOW = 300.0
#: How often a running server rereads the keys (a rotation made elsewhere).
REFRESH_INTERVAL = 30.0
#: Seconds a retired public key stays published: the replay window, plus the time
#: other replicas may still sign with it before their next refresh, plus a slow
#: delivery's timeout, with room to spare.
RETIRED_KEY_WINDOW = 600.0
#: Characters of the thumbprint in a kid (96 bits).
_KID_CHARS = 16


def b64url(raw: bytes) -> str:
    """Unpadded base64url, as JWK and the signature header write bytes."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kid_for(public: bytes) -> str:
    """``ds_`` and the start of the key's RFC 7638 thumbprint (members sorted, no spaces)."""
    canonical = f'{{"crv":"Ed25519","kty":"OKP","x":"{b64url(public)}"}}'
    return "ds_" + b64url(hashlib.sha256(canonical.encode("ascii")).digest())[:_KID_CHARS]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key as stored; ``private`` is None once the key is retired."""

    kid: str
    public: bytes
    created_at: float
    private: bytes | None = None
    retired_at: float | None = None

    @classmethod
    def generate(cls, now: float) -> SigningKey:
        secret = Ed25519PrivateKey.generate()
        public = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        private = secret.private_bytes_raw()
        return cls(kid_for(public), public, now, private)

    def to_bytes(self) -> bytes:
        record: dict[str, Any] = {"x": b64url(self.public), "created_at": self.created_at}
        if self.private is not None:
            record["d"] = b64url(self.private)
        if self.retired_at is not None:
            record["retired_at"] = self.retired_at
        return orjson.dumps(record)

    @classmethod
    def from_bytes(cls, kid: str, raw: bytes) -> SigningKey:
        record = orjson.loads(raw)
        private = record.get("d")
        return cls(
            kid,
            b64url_decode(record["x"]),
            record["created_at"],
            None if private is None else b64url_decode(private),
            record.get("retired_at"),
        )

    def retire(self, now: float) -> SigningKey:
        return SigningKey(self.kid, self.public, self.created_at, None, now)

    @property
    def dropped_at(self) -> float | None:
        """When a retired key leaves the JWK Set."""
        return None if self.retired_at is None else self.retired_at + RETIRED_KEY_WINDOW

    def published(self, now: float) -> bool:
        return self.dropped_at is None or now < self.dropped_at

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
            "x": b64url(self.public),
        }

    def __repr__(self) -> str:  # never the private half, whoever prints a key
        return f"SigningKey(kid={self.kid!r}, retired_at={self.retired_at!r})"


async def read_keys(store: Store) -> list[SigningKey]:
    """Every stored key, oldest first."""
    keys = [SigningKey.from_bytes(kid, raw) for kid, raw in await store.list_records(NAMESPACE)]
    return sorted(keys, key=lambda k: (k.created_at, k.kid))


def _active(keys: list[SigningKey]) -> SigningKey | None:
    """The newest key not retired (rotation writes the new key before retiring the old)."""
    usable = [k for k in keys if k.retired_at is None and k.private is not None]
    return usable[-1] if usable else None


class Keyring:
    """The server's Ed25519 webhook signing keys, kept in the store (records), so the
    data dir (SQLite) or Redis holds them and every replica signs with the same key."""

    def __init__(self, store: Store, keys: list[SigningKey]) -> None:
        self._store = store
        self._set(keys)

    def _set(self, keys: list[SigningKey]) -> None:
        active = _active(keys)
        if active is None or active.private is None:  # another process deleted them all
            raise LookupError("no active webhook signing key in the store")
        self._keys = keys
        self._active = active
        self._signer = Ed25519PrivateKey.from_private_bytes(active.private)

    @classmethod
    async def load(cls, store: Store) -> Keyring:
        """The keys in ``store``; the first key is made here, once, if there is none."""
        keys = await read_keys(store)
        if _active(keys) is None:
            keys = await _locked(store, _make_first_key)
        return cls(store, keys)

    @property
    def active_kid(self) -> str:
        return self._active.kid

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        """The JWK Set: the active key and the retired keys still in their window."""
        at = time.time() if now is None else now
        return {"keys": [k.jwk() for k in reversed(self._keys) if k.published(at)]}

    def signature_header(self, body: bytes, now: float | None = None) -> str:
        """'t=<unix s>,kid=<kid>,ed25519=<base64url, unpadded>' over b'<t>.' + body."""
        t = int(time.time() if now is None else now)
        signature = self._signer.sign(f"{t}.".encode("ascii") + body)
        return f"t={t},kid={self._active.kid},ed25519={b64url(signature)}"

    async def refresh(self) -> None:
        """Reread the keys: picks up a rotation made by another process."""
        self._set(await read_keys(self._store))

    def __repr__(self) -> str:
        return f"Keyring(active_kid={self._active.kid!r}, keys={len(self._keys)})"


async def rotate(store: Store) -> str:
    """Make a new active key and retire the others; returns the new kid.

    Keys retired longer ago than the window are deleted: nobody can verify with them.
    """
    keys = await _locked(store, _rotate)
    active = _active(keys)
    assert active is not None
    return active.kid


async def _make_first_key(store: Store, keys: list[SigningKey]) -> None:
    if _active(keys) is None:
        key = SigningKey.generate(time.time())
        await store.put_record(NAMESPACE, key.kid, key.to_bytes())


async def _rotate(store: Store, keys: list[SigningKey]) -> None:
    now = time.time()
    # Strictly the newest, even if another replica's clock ran ahead when it made the last.
    new = SigningKey.generate(max([now, *(k.created_at + 0.001 for k in keys)]))
    await store.put_record(NAMESPACE, new.kid, new.to_bytes())
    for key in keys:
        if key.retired_at is None:
            await store.put_record(NAMESPACE, key.kid, key.retire(now).to_bytes())
        elif not key.published(now):
            await store.delete_record(NAMESPACE, key.kid)


async def _locked(
    store: Store, change: Callable[[Store, list[SigningKey]], Awaitable[None]]
) -> list[SigningKey]:
    """Run ``change(store, keys)`` holding the keys' lease (one process at a time);
    returns the keys after it."""
    owner = uuid.uuid4().hex
    while True:  # another process may be making or rotating keys; a lease lapses
        if await store.acquire_lease(_LOCK, owner, _LOCK_TTL):
            break
        await asyncio.sleep(_LOCK_WAIT)
    try:
        await change(store, await read_keys(store))
        return await read_keys(store)
    finally:
        await store.release_lease(_LOCK, owner)
