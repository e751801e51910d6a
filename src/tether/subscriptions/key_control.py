"""`tether webhook-keys` while a server owns the SQLite file: a Unix socket beside it.

A SQLite log has one writer, the running server, so the command cannot open the
file to rotate; it asks the server instead, over ``<data file>.keys.sock``. Who
may ask is who may already read the keys in the data file: the socket is made
``0600`` (the server's user), and where the OS names the peer (Linux), a caller
of another user (root aside) is refused even if the mode was loosened. Nothing
of this is on the network, and no new secret has to be issued or kept.

One request and one answer per connection, each a JSON line::

    {"op": "list"}                           -> {"keys": [{kid, x, created_at, ...}]}
    {"op": "rotate", "activate_after": 60}   -> {"kid": "ds_..."}
    anything refused                         -> {"error": "why"}

A rotation follows the rules of :mod:`tether.subscriptions.signing`: the new key
is published at once and signs ``activate_after`` seconds later, and the server
rereads its keys at that moment, which erases the old key's private half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from tether.store.base import Store
from tether.subscriptions.signing import (
    Keyring,
    SigningKey,
    b64url,
    b64url_decode,
    read_keys,
    rotate,
)

log = logging.getLogger(__name__)

#: Longest request line read (a request is a few dozen bytes).
MAX_REQUEST = 1024
#: Seconds a client has to send its request, and the command waits for an answer.
TIMEOUT = 10.0
#: Longest ``activate_after`` taken: a day (receivers refetch the key set long before).
MAX_ACTIVATION = 86400.0
#: Seconds after a new key's activation the server rereads its keys.
_LATE = 0.1


def socket_path(data_file: Path) -> Path:
    """Where the server owning ``data_file`` answers `tether webhook-keys`."""
    return data_file.with_name(data_file.name + ".keys.sock")


class ControlRefused(Exception):
    """The server answered with an error, or the socket would not take the caller."""


class KeyControl:
    """The server's side: answers list and rotate on a Unix socket, while it runs."""

    def __init__(self, path: Path, store: Store, keyring: Callable[[], Keyring | None]) -> None:
        """``keyring``: the running subscriptions' keyring, reread after a rotation."""
        self.path = path
        self._store = store
        self._keyring = keyring
        self._server: asyncio.Server | None = None
        #: Connections being answered and refreshes waiting for a key's activation.
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; a socket left by a server that died is replaced (we own the data file)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, path=str(self.path), limit=MAX_REQUEST
            )
        except OSError as err:  # e.g. a path longer than the OS takes (108 bytes on Linux)
            log.warning("`tether webhook-keys` cannot reach this server: %s", err)
            return
        os.chmod(self.path, 0o600)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._spawn(self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._answer(reader, writer)
            writer.write(orjson.dumps(answer) + b"\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the caller went away
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        try:  # read first, refuse after: the caller reads the answer once it has sent
            line = await asyncio.wait_for(reader.readuntil(b"\n"), TIMEOUT)
        except (TimeoutError, asyncio.LimitOverrunError):
            return {"error": "not a request"}
        uid = _peer_uid(writer)
        if uid is not None and uid not in (os.geteuid(), 0):
            log.warning("refused `tether webhook-keys` from uid %d", uid)
            return {"error": f"uid {uid} is not this server's user"}
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError:
            return {"error": "not a request"}
        try:
            return await self._do(request)
        except Exception:  # the store failed: say so, and keep serving
            log.exception("could not answer `tether webhook-keys`")
            return {"error": "the server could not do it; its log says why"}

    async def _do(self, request: Any) -> dict[str, Any]:
        op = request.get("op") if isinstance(request, dict) else None
        if op == "list":
            return {"keys": [key_fields(k) for k in await read_keys(self._store)]}
        if op == "rotate":
            delay = request.get("activate_after")
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                return {"error": "activate_after must be a number of seconds"}
            if not (math.isfinite(delay) and 0 <= delay <= MAX_ACTIVATION):
                return {"error": f"activate_after must be 0 to {MAX_ACTIVATION:g} seconds"}
            return {"kid": await self._rotate(float(delay))}
        return {"error": "op must be list or rotate"}

    async def _rotate(self, delay: float) -> str:
        kid = await rotate(self._store, delay=delay)
        [key] = [k for k in await read_keys(self._store) if k.kid == kid]
        keyring = self._keyring()
        if keyring is not None:  # published now, not at the next refresh
            await keyring.refresh()
            self._spawn(self._refresh_at(keyring, key.signs_from))
        log.info("rotated the webhook signing key: %s signs from %.0f", kid, key.signs_from)
        return kid

    @staticmethod
    async def _refresh_at(keyring: Keyring, signs_from: float) -> None:
        """Reread the keys when the new one starts signing: the old one's private half goes."""
        # Past the moment, not at it: a loop's timer may fire a clock tick early.
        await asyncio.sleep(max(0.0, signs_from - time.time()) + _LATE)
        try:
            await keyring.refresh()
        except Exception:
            log.exception("could not refresh the webhook signing keys; the next refresh will")


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The connecting process's user, where the OS says (Linux's SO_PEERCRED)."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    return int(uid)


def key_fields(key: SigningKey) -> dict[str, Any]:
    """A key's public fields, as the socket sends them (never the private half)."""
    return {
        "kid": key.kid,
        "x": b64url(key.public),
        "created_at": key.created_at,
        "signs_from": key.signs_from,
        "retired_at": key.retired_at,
    }


def public_key(fields: dict[str, Any]) -> SigningKey:
    return SigningKey(
        fields["kid"],
        b64url_decode(fields["x"]),
        fields["created_at"],
        fields["signs_from"],
        retired_at=fields["retired_at"],
    )


def ask(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The command's side: the running server's answer, or None if none listens at ``path``.

    ControlRefused when the server says no, or the OS does (another user's socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(str(path))
        except PermissionError:
            raise ControlRefused(
                f"permission denied on {path}: run this as the user the server runs as"
            ) from None
        except OSError:
            return None  # no server, one that died and left its socket, or none could bind
        answer = b""
        try:
            sock.sendall(orjson.dumps(request) + b"\n")
            while not answer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError as err:  # a timeout, or the server went away
            raise ControlRefused(f"no answer from the server at {path}: {err}") from None
    try:
        reply = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise ControlRefused(f"the server at {path} gave no answer") from None
    if "error" in reply:
        raise ControlRefused(f"the server refused: {reply['error']}")
    return dict(reply)
