"""`tether webhook-keys` while `tether serve` owns its SQLite file: the real command
asks the real server over the socket beside the file, and the server rotates with
no restart, following the same rules as on Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers.server import ServerFactory, TetherServer, tether_command
from subscriptions.harness import Api, Receiver, receiver_fixture
from subscriptions.receiver import SIGNATURE, verify
from tether.store.sqlite import SqliteStore
from tether.subscriptions.key_control import socket_path
from tether.subscriptions.signing import NAMESPACE

#: Seconds between the test's rotation and the new key's first signature: room for a
#: delivery and two CLI subprocesses before it on a loaded 2-core machine (5 was not).
ACTIVATE = 12
#: A user that is not the server's (the conventional "nobody").
NOBODY = 65534


def tether(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tether_command(), *args], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, **options,
    )  # fmt: skip


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for state in receiver_fixture():
        yield state


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A data dir's parent that any user may traverse (pytest's tmp is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="tk-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path)


async def jwks_kids(api: Api) -> list[str]:
    response = await api.http.get("__ds/jwks.json")
    assert response.status_code == 200
    return [k["kid"] for k in response.json()["keys"]]


async def delivery_kid(api: Api, receiver: Receiver, n: int) -> str:
    """Append to the watched stream; the kid that signed the wake, checked with the JWKS."""
    await api.append("events/a", {"n": n})
    delivery = await receiver.next()
    jwks = (await api.http.get("__ds/jwks.json")).json()
    assert delivery.signature is not None and verify(delivery.raw, delivery.signature, jwks)
    match = SIGNATURE.match(delivery.signature)
    assert match is not None
    return match.group(2)


async def stored_private_halves(store: SqliteStore) -> list[str]:
    records = [orjson.loads(raw) for _, raw in await store.list_records(NAMESPACE)]
    return [r["d"] for r in records if "d" in r]


def listed(data_dir: Path) -> list[list[str]]:
    done = tether("webhook-keys", "list", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return [row.split() for row in done.stdout.splitlines()[1:]]


async def test_a_rotation_reaches_the_running_server_and_signs_after_activation(
    tether_server: ServerFactory, receiver: Receiver
) -> None:
    """No restart: the key set lists the new key at once, deliveries are signed by the
    old key until the activation delay has passed and by the new one after it, and
    the old key's private half is erased by then."""
    server = tether_server(extra_args=("--webhook-allow-loopback",))
    pid = server.pid
    api = Api(server)
    try:
        receiver.default = (200, {"done": True})
        created = await api.put_sub("s", {"type": "webhook", "streams": ["events/a"],
                                          "webhook": {"url": receiver.url}})  # fmt: skip
        assert created.status_code == 201, created.text
        await api.create_stream("events/a", {"n": 0})
        old = (await receiver.next()).signature
        assert old is not None
        [old_kid] = await jwks_kids(api)

        rotated = await asyncio.to_thread(
            tether, "webhook-keys", "rotate", "--activate-after", str(ACTIVATE),
            "--data-dir", str(server.data_dir),
        )  # fmt: skip
        active_by = time.monotonic() + ACTIVATE  # the rotation was made before this
        assert rotated.returncode == 0, rotated.stderr
        new_kid = rotated.stdout.strip()
        assert new_kid.startswith("ds_") and new_kid != old_kid
        assert f"signs with it from {ACTIVATE} s on" in rotated.stderr
        assert await jwks_kids(api) == [new_kid, old_kid]  # published now
        assert await delivery_kid(api, receiver, 1) == old_kid  # not active yet
        rows = await asyncio.to_thread(listed, server.data_dir)
        assert [row[0] for row in rows] == [new_kid, old_kid]
        assert "next:" in rows[0] and "until" in rows[1]

        await asyncio.sleep(active_by + 0.5 - time.monotonic())
        assert await delivery_kid(api, receiver, 2) == new_kid
        assert await jwks_kids(api) == [new_kid, old_kid]  # the old one for its window
        rows = await asyncio.to_thread(listed, server.data_dir)
        assert rows[0][-1] == "active" and "retired" in rows[1]
        assert server.pid == pid  # the same process all along
    finally:
        await api.aclose()
    await asyncio.to_thread(server.stop)
    store = SqliteStore(server.data_dir / "tether.db")
    await store.open()
    try:
        privates = await stored_private_halves(store)
    finally:
        await store.aclose()
    assert len(privates) == 1  # the new key's: the retired one's was erased at activation
    for secret in privates:
        assert secret not in rotated.stdout + rotated.stderr + server.output()


#: Sends one request line as the CLI does and prints the answer, or the OS's refusal;
#: stdlib only, so another user's interpreter runs it (the venv may be root's alone).
ASK_AS_ANOTHER_USER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("connect: permission denied")
    raise SystemExit
sock.sendall(b'{"op": "rotate", "activate_after": 0}\\n')
print(sock.makefile("rb").readline().decode())
"""
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON.exists(),
    reason="calling as another user needs root, and an interpreter that user may run",
)
async def test_another_user_is_refused_and_nothing_changes(
    tether_server: ServerFactory, short_dir: Path
) -> None:
    """The socket is the server user's only (mode 0600); and should its mode be
    loosened, the server still refuses a caller of another user. Neither changes a key."""
    data_dir = short_dir / "data"
    server = tether_server(data_dir)
    api = Api(server)
    sock = socket_path(data_dir / "tether.db")

    def ask_as_nobody() -> str:
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-I", "-c", ASK_AS_ANOTHER_USER, str(sock)],
            capture_output=True, text=True, timeout=30, user=NOBODY, cwd="/",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    try:
        before = await jwks_kids(api)
        assert sock.stat().st_mode & 0o777 == 0o600
        data_dir.chmod(0o711)
        assert await asyncio.to_thread(ask_as_nobody) == "connect: permission denied"
        sock.chmod(0o666)  # an operator's mistake: the server still checks who calls
        answer = orjson.loads(await asyncio.to_thread(ask_as_nobody))
        assert answer == {"error": f"uid {NOBODY} is not this server's user"}
        assert await jwks_kids(api) == before
        assert [row[0] for row in await asyncio.to_thread(listed, data_dir)] == before
    finally:
        await api.aclose()


def ask_raw(path: Path, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(line)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(4096)
            assert chunk, "the server closed without an answer"
            answer += chunk
    reply: dict[str, Any] = orjson.loads(answer)
    return reply


async def test_a_bad_request_on_the_socket_is_refused_and_changes_nothing(
    tether_server: ServerFactory,
) -> None:
    server = tether_server()
    api = Api(server)
    try:
        before = await jwks_kids(api)
        sock = socket_path(server.data_dir / "tether.db")
        for line in (
            b"not json\n",
            b'{"op": "delete"}\n',
            b'{"op": "rotate"}\n',
            b'{"op": "rotate", "activate_after": -1}\n',
            b'{"op": "rotate", "activate_after": true}\n',
            b'{"op": "rotate", "activate_after": 1e9}\n',
            b"[1]\n",
        ):
            answer = await asyncio.to_thread(ask_raw, sock, line)
            assert set(answer) == {"error"}, (line, answer)
        assert await jwks_kids(api) == before
        bad = tether("webhook-keys", "rotate", "--activate-after", "-1",
                     "--data-dir", str(server.data_dir))  # fmt: skip
        assert bad.returncode == 2 and "--activate-after" in bad.stderr
        assert await jwks_kids(api) == before
    finally:
        await api.aclose()


def test_a_server_that_answers_on_no_socket_is_named_and_nothing_changes(
    tether_server: ServerFactory,
) -> None:
    """The file is held but nobody answers (here: the socket was removed behind the
    server's back): a clear line, no traceback, and the file is not opened."""
    server: TetherServer = tether_server()
    sock = socket_path(server.data_dir / "tether.db")
    sock.unlink()
    refused = tether("webhook-keys", "rotate", "--data-dir", str(server.data_dir))
    assert refused.returncode == 1
    assert f"answers nothing on {sock}" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""


def test_a_socket_left_by_a_killed_server_is_stepped_past(tether_server: ServerFactory) -> None:
    """kill -9 leaves the socket file; nobody listens, so the command opens the file
    itself (the owner is gone) and the next start listens again."""
    server = tether_server()
    server.kill()
    sock = socket_path(server.data_dir / "tether.db")
    assert sock.exists()
    rotated = tether("webhook-keys", "rotate", "--data-dir", str(server.data_dir))
    assert rotated.returncode == 0, rotated.stderr
    assert "next start" in rotated.stderr
    again = tether_server(server.data_dir)
    rows = listed(again.data_dir)
    assert rows[0][0] == rotated.stdout.strip() and rows[0][-1] == "active"
