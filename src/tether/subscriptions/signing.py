"""The server's Ed25519 webhook signing keys: made once, kept in the store, rotated on demand.

Webhook receivers verify each delivery with a public key they fetch from the JWK Set
at ``__ds/jwks.json`` (PROTOCOL.md 6.5, 7.1). The keys are records in the store, so
the SQLite file or Redis keeps them across restarts and every replica sharing the
store signs with the same key.

A key's ``kid`` is ``ds_`` and the start of its RFC 7638 JWK thumbprint: derived
from the key material, so it is stable and names one key.

Rotating publishes a new key at once and signs with it from
:data:`ACTIVATION_DELAY` later: by then every replica has reread the keys
(each does every :data:`REFRESH_INTERVAL`), so whichever replica a receiver
fetches the JWK Set from already lists the key a delivery names. At that moment
the old key stops signing; its private half is erased at the next refresh or
rotation, and its public half stays in the JWK Set for
:data:`RETIRED_KEY_WINDOW` (every signature it made is out of a receiver's replay
window by then), after which it drops out and the next rotation deletes it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tether.store.base import Store

#: The records namespace holding one record per key, by kid.
NAMESPACE = "webhook-keys"
#: The store lease that serializes making the first key and rotating.
_LOCK = "webhook-keys"
_LOCK_TTL = 30.0
#: Seconds between two tries for the lease while another process holds it.
_LOCK_WAIT = 0.05
#: Seconds a receiver accepts a signature after its timestamp (PROTOCOL.md 7.1).
REPLAY_WINDOW = 300.0
#: How often a running server rereads the keys (the subscriptions service's timer).
REFRESH_INTERVAL = 30.0
#: Seconds between a rotation and the new key's first signature: two refreshes.
ACTIVATION_DELAY = 2 * REFRESH_INTERVAL
#: Seconds a retired public key stays published: the replay window, and as much
#: again for a delivery's timeout and clocks that disagree.
RETIRED_KEY_WINDOW = 2 * REPLAY_WINDOW
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
    """One key as stored: it signs from ``signs_from`` until ``retired_at``."""

    kid: str
    public: bytes
    created_at: float
    signs_from: float
    #: None once the key is retired and erased.
    private: bytes | None = None
    #: When it stops signing (the next key's ``signs_from``); None for the newest key.
    retired_at: float | None = None

    @classmethod
    def generate(cls, now: float, signs_from: float) -> SigningKey:
        secret = Ed25519PrivateKey.generate()
        public = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(kid_for(public), public, now, signs_from, secret.private_bytes_raw())

    def to_bytes(self) -> bytes:
        record: dict[str, Any] = {
            "x": b64url(self.public),
            "created_at": self.created_at,
            "signs_from": self.signs_from,
        }
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
            record["signs_from"],
            None if private is None else b64url_decode(private),
            record.get("retired_at"),
        )

    def signs_at(self, now: float) -> bool:
        return (
            self.private is not None
            and self.signs_from <= now
            and (self.retired_at is None or now < self.retired_at)
        )

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
    return sorted(keys, key=lambda k: (k.signs_from, k.created_at, k.kid))


def signing_key(keys: list[SigningKey], now: float) -> SigningKey | None:
    """The key that signs at ``now``: of those in their time, the one that started last."""
    current = [k for k in keys if k.signs_at(now)]
    return current[-1] if current else None


def _stale(keys: list[SigningKey], now: float) -> bool:
    """Whether a retired key still has its private half, or is past its window."""
    return any(
        k.retired_at is not None and k.retired_at <= now and (k.private or not k.published(now))
        for k in keys
    )


class Keyring:
    """The server's Ed25519 webhook signing keys, kept in the store (records), so the
    data dir (SQLite) or Redis holds them and every replica signs with the same key."""

    def __init__(self, store: Store, keys: list[SigningKey]) -> None:
        self._store = store
        self._set(keys)

    def _set(self, keys: list[SigningKey]) -> None:
        self._keys = keys
        self._signers = {
            k.kid: Ed25519PrivateKey.from_private_bytes(k.private)
            for k in keys
            if k.private is not None
        }

    @classmethod
    async def load(cls, store: Store) -> Keyring:
        """The keys in ``store``; the first key is made here, once, if there is none."""
        keys = await read_keys(store)
        if signing_key(keys, time.time()) is None:
            keys = await _locked(store, _make_first_key)
        return cls(store, keys)

    def _signing(self, now: float) -> SigningKey:
        key = signing_key(self._keys, now)
        if key is None:  # only if the records were removed behind the server's back
            raise LookupError("no webhook signing key in the store")
        return key

    @property
    def active_kid(self) -> str:
        return self._signing(time.time()).kid

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        """The JWK Set: the signing key, the next one, and retired ones in their window."""
        at = time.time() if now is None else now
        return {"keys": [k.jwk() for k in reversed(self._keys) if k.published(at)]}

    def signature_header(self, body: bytes, now: float | None = None) -> str:
        """'t=<unix s>,kid=<kid>,ed25519=<base64url, unpadded>' over b'<t>.' + body."""
        at = time.time() if now is None else now
        key = self._signing(at)
        t = int(at)
        signature = self._signers[key.kid].sign(f"{t}.".encode("ascii") + body)
        return f"t={t},kid={key.kid},ed25519={b64url(signature)}"

    async def refresh(self) -> None:
        """Reread the keys: picks up a rotation made by another process, erases the
        private half of a key that no longer signs, makes a key if none is left."""
        keys = await read_keys(self._store)
        now = time.time()
        if signing_key(keys, now) is None:  # the records were removed: start over
            keys = await _locked(self._store, _make_first_key)
        elif _stale(keys, now):
            keys = await _locked(self._store, _tidy)
        self._set(keys)

    def __repr__(self) -> str:
        return f"Keyring(keys={[k.kid for k in self._keys]!r})"


async def rotate(store: Store, *, delay: float = ACTIVATION_DELAY) -> str:
    """Publish a new key that signs from ``delay`` seconds on, when the current one
    retires; returns the new kid. ``delay=0`` when no server runs (SQLite's one owner
    is stopped): nobody needs the time to reread the keys."""
    new: list[SigningKey] = []

    async def change(store: Store, keys: list[SigningKey]) -> None:
        now = time.time()
        wait = delay if signing_key(keys, now) is not None else 0.0  # nothing to take over
        # The newest, even if another replica's clock ran ahead when it made the last.
        signs_from = max([now + wait, *(k.signs_from for k in keys)])
        key = SigningKey.generate(now, signs_from)
        await store.put_record(NAMESPACE, key.kid, key.to_bytes())
        for old in keys:
            if old.retired_at is None:
                retired = replace(old, retired_at=signs_from)
                await store.put_record(NAMESPACE, old.kid, retired.to_bytes())
        await _tidy(store, await read_keys(store))
        new.append(key)

    await _locked(store, change)
    return new[0].kid


async def _make_first_key(store: Store, keys: list[SigningKey]) -> None:
    now = time.time()
    if signing_key(keys, now) is None:
        key = SigningKey.generate(now, now)
        await store.put_record(NAMESPACE, key.kid, key.to_bytes())


async def _tidy(store: Store, keys: list[SigningKey]) -> None:
    """Erase the private half of keys that no longer sign; delete those out of the JWKS."""
    now = time.time()
    for key in keys:
        if key.retired_at is None or key.retired_at > now:
            continue
        if not key.published(now):
            await store.delete_record(NAMESPACE, key.kid)
        elif key.private is not None:
            await store.put_record(NAMESPACE, key.kid, replace(key, private=None).to_bytes())


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
