"""Start and stop a real ``redis-server`` for tests, on a free port in a temp dir.

Tests that need Redis call :func:`require_redis_server` (through a fixture of
their own; see tests/store/test_redis.py): without ``redis-server`` on PATH
they skip with the reason, unless ``CI`` is set, where a missing Redis is a
failure. On Debian and Ubuntu: ``apt-get install -y redis-server``.

The server keeps an append-only file fsynced on every write, so a test can kill
it (SIGKILL) and start it again on the same port and directory with every
acknowledged write still there, as a production Redis configured for
durability would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.server import find_free_port

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 3


def require_redis_server() -> str:
    """Path of ``redis-server``; skips the test without it (fails instead in CI)."""
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )
    if path:
        return path
    reason = "redis-server not found on PATH (Debian/Ubuntu: apt-get install -y redis-server)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip")
    pytest.skip(reason)


class RedisServer:
    """One ``redis-server`` child process; usable as a context manager."""

    def __init__(
        self, directory: Path, *, binary: str | None = None, options: tuple[str, ...] = ()
    ) -> None:
        """``options``: more command-line options for redis-server."""
        self.binary = binary or require_redis_server()
        self.options = options
        self.directory = Path(directory)
        self.port = find_free_port(HOST)
        self.log_path = self.directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--logfile", str(self.log_path),
            *self.options,
        ]  # fmt: skip

    def start(self, timeout: float = READY_TIMEOUT) -> RedisServer:
        """Start (or restart, on the same port and data) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(_START_ATTEMPTS):
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                taken = "address already in use" in self.output().lower()
                self.kill()
                if not taken or attempt == _START_ATTEMPTS - 1:
                    raise
                self.port = find_free_port(HOST)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"redis-server exited with code {code}\n{self.output()[-4000:]}")
            if self.ping():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"redis-server did not answer within {timeout:.0f}s\n{self.output()[-4000:]}"
                )
            time.sleep(0.02)

    def ping(self) -> bool:
        """True when the server answers PING with PONG (not while it loads its data)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis crashes, as a failure test needs."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A started ``redis-server`` in ``directory``, stopped on exit."""
    with RedisServer(directory) as server:
        yield server
