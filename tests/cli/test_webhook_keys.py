"""`tether webhook-keys rotate|list`: the real command on the server's store (a SQLite
file a `tether serve` made, or Redis shared with a running replica)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from helpers.server import ServerFactory, tether_command
from redis_server import RedisServer, running_redis
from tether.store.redis import RedisStore
from tether.store.sqlite import SqliteStore
from tether.subscriptions.signing import NAMESPACE, Keyring


def tether(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tether_command(), *args], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def a_servers_data_dir(tether_server: ServerFactory, tmp_path: Path) -> Path:
    """The data dir of a `tether serve` that ran and stopped (SQLite has one owner)."""
    data_dir = tmp_path / "data"
    tether_server(data_dir).stop()
    return data_dir


async def stored_private_halves(store: SqliteStore | RedisStore) -> list[str]:
    records = [orjson.loads(raw) for _, raw in await store.list_records(NAMESPACE)]
    return [r["d"] for r in records if "d" in r]


async def test_rotate_and_list_on_the_servers_sqlite_file(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = a_servers_data_dir(tether_server, tmp_path)
    made = tether("webhook-keys", "list", "--data-dir", str(data_dir))
    assert made.returncode == 0, made.stderr
    header, *rows = made.stdout.splitlines()
    # The server made its first key when it started (its subscriptions sign with it).
    assert len(rows) == 1 and rows[0].startswith("ds_") and rows[0].endswith("active")
    servers = rows[0].split()[0]

    first = tether("webhook-keys", "rotate", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    second = tether("webhook-keys", "rotate", "--data-dir", str(data_dir))
    assert second.returncode == 0, second.stderr
    old, new = first.stdout.strip(), second.stdout.strip()
    assert old.startswith("ds_") and new.startswith("ds_") and old != new
    assert "next start" in second.stderr

    listed = tether("webhook-keys", "list", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["KID", "CREATED", "STATE"]
    assert [row.split()[0] for row in rows] == [new, old, servers]
    assert rows[0].endswith("active")
    assert all("retired" in row and "in the JWKS until" in row for row in rows[1:])

    store = SqliteStore(data_dir / "tether.db")  # the server's next start
    await store.open()
    try:
        keyring = await Keyring.load(store)
        assert keyring.active_kid == new
        assert [k["kid"] for k in keyring.jwks()["keys"]] == [new, old, servers]
        privates = await stored_private_halves(store)
    finally:
        await store.aclose()
    assert len(privates) == 1  # the retired keys' private halves are gone
    for result in (first, second, listed):
        assert privates[0] not in result.stdout + result.stderr


def test_a_store_that_is_not_the_servers_is_refused(tmp_path: Path) -> None:
    missing = tether("webhook-keys", "rotate", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert "no tether store at" in missing.stderr
    assert not (tmp_path / "nowhere").exists()  # nothing made by a mistyped path
    memory = tether("webhook-keys", "list", "--store", "memory")
    assert memory.returncode == 1
    assert "memory" in memory.stderr


async def test_a_rotation_on_redis_reaches_a_running_replica(redis_server: RedisServer) -> None:
    """TETHER_STORE names the store, as for `tether serve`; the replica rereads its keys."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    url = f"{redis_server.url()}?prefix={prefix}"
    replica = RedisStore(url)
    await replica.open()
    try:
        keyring = await Keyring.load(replica)
        old = keyring.active_kid
        rotated = tether("webhook-keys", "rotate", env={**os.environ, "TETHER_STORE": url})
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert new != old
        assert f"replicas publish {new}" in rotated.stderr
        await keyring.refresh()
        assert {k["kid"] for k in keyring.jwks()["keys"]} == {new, old}
        assert keyring.active_kid == old  # until every replica has reread the keys
        listed = tether("webhook-keys", "list", "--store", url)
        rows = listed.stdout.splitlines()[1:]
        assert [row.split()[0] for row in rows] == [new, old]
        assert "next: signs from" in rows[0] and "active until" in rows[1]
        for secret in await stored_private_halves(replica):
            assert secret not in rotated.stdout + rotated.stderr + listed.stdout
    finally:
        await replica.aclose()
