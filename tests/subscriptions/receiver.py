"""What a webhook receiver does with a delivery: verify it from the JWK Set alone.

Written from PROTOCOL.md 7.1 and 6.5 without tether's code, so a test that passes
here passes for any receiver that follows the protocol.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: The header's grammar, as the conformance suite matches it.
SIGNATURE = re.compile(r"^t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)$")
REPLAY_WINDOW = 300


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(raw_body: bytes, header: str, jwks: dict[str, Any], now: float | None = None) -> bool:
    """True when ``header`` signs ``raw_body`` with a key of ``jwks``, recently."""
    match = SIGNATURE.match(header)
    if match is None:
        return False
    timestamp, kid, signature = match.groups()
    keys = [k for k in jwks["keys"] if k["kid"] == kid]
    if len(keys) != 1 or keys[0]["kty"] != "OKP" or keys[0]["crv"] != "Ed25519":
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > REPLAY_WINDOW:
        return False
    public = Ed25519PublicKey.from_public_bytes(unb64url(keys[0]["x"]))
    try:
        public.verify(unb64url(signature), timestamp.encode() + b"." + raw_body)
    except InvalidSignature:
        return False
    return True
