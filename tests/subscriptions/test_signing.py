"""Webhook signing keys: made once, kept in the store, verifiable from the JWK Set alone,
rotated with the old public key published for its window, shared by replicas."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from redis_server import RedisServer, running_redis
from tether.store.redis import RedisStore
from tether.store.sqlite import SqliteStore
from tether.subscriptions.signing import (
    ACTIVATION_DELAY,
    NAMESPACE,
    RETIRED_KEY_WINDOW,
    Keyring,
    SigningKey,
    rotate,
)

from .receiver import verify

BODY = b'{"subscription_id":"sub-1","generation":7,"text":"caf\xc3\xa9"}'
SUITE = (
    Path(__file__).parents[2] / "conformance/node_modules/@durable-streams/"
    "server-conformance-tests/dist/src-wMgS3XWd.js"
)


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "tether.db")
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[list[RedisStore]]:
    """Two stores on the same Redis keys, as two tether replicas."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    stores = [RedisStore(redis_server.url(), prefix=prefix) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        yield stores
    finally:
        for store in stores:
            await store.aclose()


async def test_the_first_key_is_made_once_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "tether.db"
    first = SqliteStore(db)
    await first.open()
    kid = (await Keyring.load(first)).active_kid
    assert (await Keyring.load(first)).active_kid == kid
    await first.aclose()
    again = SqliteStore(db)  # a restarted server, on the same data file
    await again.open()
    try:
        keyring = await Keyring.load(again)
        assert keyring.active_kid == kid
        assert [k for k, _ in await again.list_records(NAMESPACE)] == [kid]
    finally:
        await again.aclose()


async def test_replicas_starting_together_make_one_key(replicas: list[RedisStore]) -> None:
    keyrings = await asyncio.gather(*(Keyring.load(store) for store in replicas))
    assert keyrings[0].active_kid == keyrings[1].active_kid
    assert len(await replicas[0].list_records(NAMESPACE)) == 1


async def test_the_jwks_publishes_the_public_key_only(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    (key,) = keyring.jwks()["keys"]
    assert key == {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": keyring.active_kid,
        "use": "sig",
        "alg": "EdDSA",
        "x": key["x"],
    }
    assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32


async def test_the_kid_is_the_rfc7638_thumbprint_of_the_key(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    (key,) = keyring.jwks()["keys"]
    members = {"crv": key["crv"], "kty": key["kty"], "x": key["x"]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode().rstrip("=")
    assert keyring.active_kid.startswith("ds_")
    assert thumbprint.startswith(keyring.active_kid.removeprefix("ds_"))
    assert len(keyring.active_kid) >= 3 + 16


async def test_a_receiver_verifies_the_signature_from_the_jwks_alone(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    jwks = orjson.loads(orjson.dumps(keyring.jwks()))  # as fetched over HTTP
    header = keyring.signature_header(BODY)
    assert verify(BODY, header, jwks)
    assert not verify(BODY + b" ", header, jwks)
    assert not verify(BODY.replace(b"sub-1", b"sub-2"), header, jwks)


async def test_the_signature_names_its_time_and_covers_it(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    jwks = keyring.jwks()
    header = keyring.signature_header(BODY, now=1_800_000_000.7)
    assert header.startswith(f"t=1800000000,kid={keyring.active_kid},ed25519=")
    assert verify(BODY, header, jwks, now=1_800_000_100)
    assert not verify(BODY, header, jwks, now=1_800_000_000 + 301)  # replayed too late
    forged_time = header.replace("t=1800000000", "t=1800000001")
    assert not verify(BODY, forged_time, jwks, now=1_800_000_000)


def _node() -> str:
    node = shutil.which("node")
    if node and SUITE.exists():
        return node
    reason = "needs node and the conformance suite's npm packages (make conformance)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


async def test_the_conformance_suites_own_check_accepts_the_signature(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    """verifyWebhookSignature, cut out of the pinned suite and run under Node's crypto."""
    node = _node()
    source = SUITE.read_text()
    start = source.index("function verifyWebhookSignature(")
    end = source.index("\n}\n", start) + 2
    keyring = await Keyring.load(sqlite)
    body = orjson.dumps({"subscription_id": "sub-1", "text": "café ✓", "n": [1, 2.5]})
    script = tmp_path / "verify.mjs"
    script.write_text(
        'import { createPublicKey, verify } from "node:crypto";\n'
        + source[start:end]
        + "\nconst input = JSON.parse(process.argv[2]);\n"
        "console.log(verifyWebhookSignature(input.raw, input.header, input.jwks));\n"
    )
    cases = {
        "signed": (body.decode(), keyring.signature_header(body)),
        "tampered": (body.decode().replace("sub-1", "sub-2"), keyring.signature_header(body)),
    }
    answers = {}
    for name, (raw, header) in cases.items():
        arg = json.dumps({"raw": raw, "header": header, "jwks": keyring.jwks()})
        proc = await asyncio.create_subprocess_exec(
            node, str(script), arg, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        answers[name] = out.decode().strip()
    assert answers == {"signed": "true", "tampered": "false"}


async def test_a_rotation_publishes_the_new_key_before_it_signs(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    old = keyring.active_kid
    before = keyring.signature_header(BODY)
    new = await rotate(sqlite)
    assert new != old
    await keyring.refresh()
    jwks = keyring.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [new, old]  # published at once
    assert keyring.active_kid == old  # every replica gets to reread the keys first
    assert f"kid={old}," in keyring.signature_header(BODY)
    later = time.time() + ACTIVATION_DELAY + 1
    after = keyring.signature_header(BODY, now=later)
    assert f"kid={new}," in after
    assert verify(BODY, after, keyring.jwks(now=later), now=later)
    assert verify(BODY, before, keyring.jwks(now=later), now=later)  # the old one still verifies


async def test_with_no_server_running_the_new_key_signs_at_once(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    old = keyring.active_kid
    new = await rotate(sqlite, delay=0)
    await keyring.refresh()
    assert keyring.active_kid == new
    assert verify(BODY, keyring.signature_header(BODY), keyring.jwks())
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [new, old]


async def test_a_first_rotation_signs_at_once(sqlite: SqliteStore) -> None:
    """Nothing signs yet, so there is nothing for replicas to wait for."""
    kid = await rotate(sqlite)
    keyring = await Keyring.load(sqlite)
    assert keyring.active_kid == kid
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [kid]


async def test_a_keyring_whose_keys_were_removed_makes_a_new_one(sqlite: SqliteStore) -> None:
    keyring = await Keyring.load(sqlite)
    old = keyring.active_kid
    await sqlite.delete_record(NAMESPACE, old)
    await keyring.refresh()
    assert keyring.active_kid != old
    assert verify(BODY, keyring.signature_header(BODY), keyring.jwks())


async def test_a_retired_key_is_erased_and_leaves_the_jwks_after_its_window(
    sqlite: SqliteStore,
) -> None:
    keyring = await Keyring.load(sqlite)
    old = keyring.active_kid
    new = await rotate(sqlite, delay=0)
    await keyring.refresh()
    retired = orjson.loads(await sqlite.get_record(NAMESPACE, old) or b"{}")
    assert "d" not in retired  # the private half is gone once the key stops signing
    at = retired["retired_at"]
    assert RETIRED_KEY_WINDOW >= 300 + 72  # replay window + the longest retry delay
    kids = [k["kid"] for k in keyring.jwks(now=at + RETIRED_KEY_WINDOW - 1)["keys"]]
    assert kids == [new, old]
    assert [k["kid"] for k in keyring.jwks(now=at + RETIRED_KEY_WINDOW + 1)["keys"]] == [new]


async def test_a_refresh_erases_the_private_half_once_the_old_key_stops(
    sqlite: SqliteStore,
) -> None:
    """A rotated key keeps its private half while it still signs; the first refresh
    after it stopped (on any replica) erases it."""
    keyring = await Keyring.load(sqlite)
    old = keyring.active_kid
    new = await rotate(sqlite)
    record = SigningKey.from_bytes(old, await sqlite.get_record(NAMESPACE, old) or b"")
    assert record.private is not None  # signs until the new key takes over
    now = time.time()  # as if that time had come:
    stopped = replace(record, retired_at=now - 1)
    await sqlite.put_record(NAMESPACE, old, stopped.to_bytes())
    took_over = SigningKey.from_bytes(new, await sqlite.get_record(NAMESPACE, new) or b"")
    await sqlite.put_record(NAMESPACE, new, replace(took_over, signs_from=now - 1).to_bytes())
    await keyring.refresh()
    assert keyring.active_kid == new
    assert "d" not in orjson.loads(await sqlite.get_record(NAMESPACE, old) or b"{}")
    assert len(await sqlite.list_records(NAMESPACE)) == 2


async def test_the_next_rotation_deletes_keys_past_their_window(sqlite: SqliteStore) -> None:
    await Keyring.load(sqlite)
    now = time.time()
    gone = SigningKey.generate(now - 2000, now - 2000)
    gone = replace(gone, private=None, retired_at=now - RETIRED_KEY_WINDOW - 1)
    await sqlite.put_record(NAMESPACE, gone.kid, gone.to_bytes())
    await rotate(sqlite)
    assert await sqlite.get_record(NAMESPACE, gone.kid) is None
    assert len(await sqlite.list_records(NAMESPACE)) == 2


async def test_every_replica_publishes_a_new_key_before_any_signs_with_it(
    replicas: list[RedisStore],
) -> None:
    one, two = [await Keyring.load(store) for store in replicas]
    old = one.active_kid
    new = await rotate(replicas[0])
    later = time.time() + ACTIVATION_DELAY + 1
    assert new not in {k["kid"] for k in two.jwks()["keys"]}  # until it rereads
    await two.refresh()
    assert {k["kid"] for k in two.jwks()["keys"]} == {old, new}
    assert two.active_kid == old
    signed = two.signature_header(BODY, now=later)
    assert f"kid={new}," in signed
    assert not verify(BODY, signed, one.jwks(now=later), now=later)  # one has not reread
    await one.refresh()
    assert verify(BODY, signed, one.jwks(now=later), now=later)


async def test_no_private_key_in_logs_or_reprs(
    sqlite: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyring = await Keyring.load(sqlite)
    first = orjson.loads(await sqlite.get_record(NAMESPACE, keyring.active_kid) or b"{}")["d"]
    await rotate(sqlite, delay=0)
    await keyring.refresh()
    second = orjson.loads(await sqlite.get_record(NAMESPACE, keyring.active_kid) or b"{}")["d"]
    seen = caplog.text + repr(keyring) + json.dumps(keyring.jwks())
    for secret in (first, second):
        assert secret not in seen
