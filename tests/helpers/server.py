"""Start and stop a real ``tether serve`` child process for tests.

Tests that need a server talk to the same binary a user runs (console script, real
sockets, real signals), not an in-process app, so shutdown and crash behaviour are
exercised for real. Crash tests use :meth:`TetherServer.kill` (SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

DEFAULT_HOST = "127.0.0.1"
READY_TIMEOUT = 30.0  # cold start on a slow 2-core CI machine, imports included
STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 3  # a free port can be taken between probe and bind; retry then


class ServerError(RuntimeError):
    """The server could not be started, or died, in a way the test should report."""


def find_free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tether_command() -> list[str]:
    """The argv prefix that runs ``tether`` from the interpreter running the tests.

    Prefers the console script beside ``sys.executable`` (what ``make serve`` runs),
    so tests use the same virtualenv as pytest even when it is not activated.
    """
    script = Path(sys.executable).parent / "tether"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "tether.cli.main"]


class TetherServer:
    """One ``tether serve`` child process; usable as a context manager.

    Output (stdout and stderr) goes to ``log_path`` rather than a pipe so a chatty
    server can never block on a full pipe; :meth:`output` reads it back.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        store: str = "sqlite",
        port: int | None = None,
        host: str = DEFAULT_HOST,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store = store
        self.host = host
        self.port = port if port is not None else find_free_port(host)
        self._fixed_port = port is not None
        self.log_path = log_path if log_path is not None else self.data_dir.parent / "tether.log"
        self.extra_args = list(extra_args)
        self.env = env
        self.cwd = cwd  # the directory it is started in (default: the tests')
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:4437`` (streams live under /v1/stream/)."""
        return f"http://{self.host}:{self.port}"

    def stream_url(self, path: str) -> str:
        """URL of the stream at ``path`` under the Durable Streams prefix."""
        return f"{self.base_url}/v1/stream/{path.lstrip('/')}"

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        return self._require_process().pid

    def command(self) -> list[str]:
        """Full argv used to start the server (shown in failure messages)."""
        return [
            *tether_command(),
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--store",
            self.store,
            *self.extra_args,
        ]

    def start(self, ready_timeout: float = READY_TIMEOUT) -> TetherServer:
        """Start the process and block until it answers HTTP.

        Retries on a fresh port if the chosen one was grabbed by someone else
        between :func:`find_free_port` and the server's bind.
        """
        if self.process is not None:
            raise ServerError("server already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(_START_ATTEMPTS):
            self._spawn()
            try:
                self.wait_ready(ready_timeout)
                return self
            except ServerError:
                port_taken = "address already in use" in self.output().lower()
                self.stop()
                if self._fixed_port or not port_taken or attempt == _START_ATTEMPTS - 1:
                    raise
                self.port = find_free_port(self.host)
                self.process = None
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        """Launch the child in its own session so signals reach only the server."""
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll until any HTTP response arrives; raise with the log if it dies or stalls."""
        proc = self._require_process()
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise ServerError(
                    f"tether serve exited with code {code} before it was ready\n"
                    f"command: {' '.join(self.command())}\n{self._output_tail()}"
                )
            if self._answers_http():
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"tether serve did not answer HTTP on {self.base_url} within {timeout:.0f}s\n"
                    f"command: {' '.join(self.command())}\n{self._output_tail()}"
                )
            time.sleep(0.05)

    def _answers_http(self) -> bool:
        """True if the server returns any HTTP response (a 404 still means it is up)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return True

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send SIGTERM and wait; return the exit code, or None if still running."""
        proc = self._require_process()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """SIGKILL the server (and anything it spawned): a crash, as crash tests need."""
        proc = self._require_process()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Graceful stop that always ends the process: SIGTERM, then SIGKILL on timeout."""
        if self.process is None:
            return None
        code = self.terminate(timeout)
        if code is None:
            code = self.kill()
        return code

    def output(self) -> str:
        """Everything the server has written to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _output_tail(self, lines: int = 60) -> str:
        """Last lines of the server's output, framed for a failure message."""
        tail = "\n".join(self.output().splitlines()[-lines:])
        return f"--- server output ({self.log_path}) ---\n{tail}\n--- end ---"

    def _require_process(self) -> subprocess.Popen[bytes]:
        """The running child, or a clear error if :meth:`start` was not called."""
        if self.process is None:
            raise ServerError("server not started")
        return self.process

    def __enter__(self) -> TetherServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> TetherServer:
        """``async with``: started and stopped off the event loop (the test's fakes run on it)."""
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    *,
    store: str = "sqlite",
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[TetherServer]:
    """Context manager: a started server that is stopped (SIGTERM, then SIGKILL) on exit."""
    server = TetherServer(
        data_dir, store=store, port=port, log_path=log_path, extra_args=extra_args
    )
    with server:
        yield server


class ServerFactory:
    """Starts servers on demand and stops every one of them at teardown.

    Backs the ``tether_server`` fixture so a test can start several servers (or
    restart one on the same data dir after a crash) without leaking processes.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.servers: list[TetherServer] = []

    def __call__(
        self,
        data_dir: Path | None = None,
        *,
        store: str = "sqlite",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> TetherServer:
        """Create (and by default start) a server; ``data_dir`` defaults to base_dir/data."""
        index = len(self.servers)
        server = TetherServer(
            data_dir if data_dir is not None else self.base_dir / "data",
            store=store,
            port=port,
            log_path=self.base_dir / f"server-{index}.log",
            extra_args=extra_args,
        )
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        """Stop every server this factory started, newest first."""
        for server in reversed(self.servers):
            server.stop()
