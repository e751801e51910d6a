"""Real ``tether serve`` and ``tether worker`` processes for the worker tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from helpers.server import TetherServer, tether_command
from redis_server import RedisServer

APPS = Path(__file__).parent / "apps"
WORKER_KEY = "wk-test-5b0e1c7f"
OTHER_WORKER_KEY = "wk-test-other-93ad"
API_KEY = "api-test-7c21"
READY_TIMEOUT = 30.0


class ChildProcess:
    """A child process in a session of its own, its output in a file: spawned, awaited
    until its output says it serves, stopped with SIGTERM (SIGKILL after 10 s)."""

    #: What its output says once it serves, and what it is called in an error.
    ready_line = ""
    name = "the child"

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )  # fmt: skip
        return self

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while self.ready_line not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.output()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


class WorkerProcess(ChildProcess):
    """One ``tether worker worker_app:app`` (or ``app``) child, its output in a file."""

    ready_line = "tether.worker: serving"
    name = "tether worker"

    def __init__(
        self,
        server: TetherServer,
        log_path: Path,
        env: dict[str, str],
        *args: str,
        app: str = "worker_app:app",
    ) -> None:
        command = [*tether_command(), "worker", app, "--server", server.base_url, *args]
        env = {**env, "TETHER_WORKER_KEY": WORKER_KEY, "PYTHONUNBUFFERED": "1"}
        super().__init__(command, env, log_path)

    def start(self) -> WorkerProcess:
        """Spawn it and wait until it serves."""
        self.spawn().wait_ready()
        return self


@dataclass
class Cluster:
    """A server configured for workers of agent ``words``, and the workers started."""

    tmp: Path
    redis: RedisServer | None
    env: dict[str, str]
    server: TetherServer | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    async def start_server(
        self, *args: str, api_key: bool = False, agents: str = "words,tools"
    ) -> TetherServer:
        env = {**self.env, "TETHER_WORKER_KEYS": f"{WORKER_KEY},{OTHER_WORKER_KEY}"}
        env["TETHER_WORKER_AGENTS"] = agents
        if api_key:
            env["TETHER_API_KEYS"] = API_KEY
        store = self.redis.url() if self.redis is not None else "sqlite"
        self.server = TetherServer(
            self.tmp / "data", store=store, log_path=self.tmp / "server.log", env=env,
            extra_args=list(args),
        )  # fmt: skip
        await asyncio.to_thread(self.server.start)
        return self.server

    def new_worker(self, *args: str, app: str = "worker_app:app") -> WorkerProcess:
        """A worker of ``app``, not started (stopped with the cluster once it is)."""
        assert self.server is not None
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.server, log, self.env, *args, app=app)
        self.workers.append(worker)
        return worker

    async def start_worker(self, *args: str, app: str = "worker_app:app") -> WorkerProcess:
        return await asyncio.to_thread(self.new_worker(*args, app=app).start)

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        assert self.server is not None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.server.base_url, timeout=30, headers=headers)

    def logs(self) -> str:
        parts = [w.output() for w in self.workers]
        if self.server is not None:
            parts.append(self.server.output())
        return "\n".join(parts)


def _env(words: int, delay: float) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "TETHER_TEST_WORDS": str(words),
        "TETHER_TEST_DELAY": str(delay),
    }


@contextlib.asynccontextmanager
async def cluster_of(
    tmp: Path, *, words: int = 3, delay: float = 0.0, redis: RedisServer | None = None
) -> AsyncIterator[Cluster]:
    c = Cluster(tmp, redis, _env(words, delay))
    try:
        yield c
    finally:
        for worker in c.workers:
            await asyncio.to_thread(worker.stop)
        if c.server is not None:
            await asyncio.to_thread(c.server.stop)
