"""`tether serve`'s start and stop, as a newcomer meets them: each mistake is one clear line.

Every test runs the real console script as a child process in a directory of
its own (the current directory matters: MODULE:APP and sqlite:///PATH are
relative to it).
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from helpers.server import find_free_port, tether_command
from tether.store.factory import open_store

START_TIMEOUT = 30.0


def run_serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tether serve ARGS`` run to its end (it must fail fast), output captured."""
    return subprocess.run(
        [*tether_command(), "serve", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )


def clean_env() -> dict[str, str]:
    """The test's environment without tether's variables or an import path."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("TETHER_") and k != "PYTHONPATH"
    }


class Serving:
    """A ``tether serve`` child started in ``cwd``; output to a file, read back when done."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.port = find_free_port()
        self.log = cwd / "serve.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [*tether_command(), "serve", "--port", str(self.port), *args],
                cwd=cwd,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Poll until it answers HTTP (as helpers.server does); fail with its output if it dies."""
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=2) as c:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.output()
                try:
                    c.get("/healthz")
                    return
                except httpx.TransportError:
                    time.sleep(0.05)
        raise AssertionError(f"tether serve did not answer\n{self.output()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def output(self) -> str:
        return self.log.read_text()


def test_a_port_in_use_is_one_clear_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_serve(tmp_path, "--port", str(port), "--store", "memory")
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in done.stderr
    assert "--port" in done.stderr
    assert "serving on" not in done.stderr
    assert "startup" not in done.stderr.lower()


def test_an_unreachable_redis_is_named_without_a_traceback_or_its_password(
    tmp_path: Path,
) -> None:
    port = find_free_port()  # nothing listens there
    done = run_serve(tmp_path, "--store", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert done.returncode == 1
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert "redis-server" in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr
    assert "serving on" not in done.stderr


def test_a_sqlite_path_in_a_missing_directory_is_refused_and_nothing_created(
    tmp_path: Path,
) -> None:
    done = run_serve(tmp_path, "--store", "sqlite:///nonexistent/dir/x.db")
    assert done.returncode == 1
    assert f"the directory {tmp_path / 'nonexistent' / 'dir'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_the_banner_names_the_real_sqlite_file_and_ctrl_c_ends_quietly(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    server = Serving(tmp_path, "--store", "sqlite:///logs/x.db", "--sqlite-sync", "full")
    try:
        server.wait_ready()
    finally:
        code = server.stop(signal.SIGINT)
    out = server.output()
    assert f"(store: SQLite {tmp_path / 'logs' / 'x.db'}, synchronous=full)" in out
    assert (tmp_path / "logs" / "x.db").is_file()
    assert "Aborted" not in out
    assert "Traceback" not in out
    assert code == 130  # the shell's convention for an end by Ctrl-C


def test_module_app_is_imported_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mymodule.py").write_text(
        textwrap.dedent(
            """
            import tether

            app = tether.App()

            @app.agent("hello")
            async def hello(ctx):
                await ctx.text("hi from the current directory")
            """
        )
    )
    server = Serving(tmp_path, "--store", "memory", "mymodule:app")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as c:
            models = [m["id"] for m in c.get("/v1/models").json()["data"]]
    finally:
        server.stop()
    assert "agent:hello" in models, server.output()


def test_the_serve_help_says_module_app_comes_from_the_current_directory() -> None:
    done = subprocess.run(
        [*tether_command(), "serve", "--help"], capture_output=True, text=True, check=True
    )
    assert "current directory" in done.stdout
    assert "--sqlite-sync [normal|full]" in done.stdout


def test_version_and_python_dash_m() -> None:
    version = importlib.metadata.version("tether")
    script = subprocess.run(
        [*tether_command(), "--version"], capture_output=True, text=True, check=True
    )
    module = subprocess.run(
        [sys.executable, "-m", "tether", "--version"], capture_output=True, text=True, check=True
    )
    assert script.stdout == module.stdout == f"tether, version {version}\n"
    usage = subprocess.run(
        [sys.executable, "-m", "tether", "--help"], capture_output=True, text=True, check=True
    )
    assert usage.stdout.startswith("Usage: tether ")


def test_sqlite_sync_full_reaches_the_sqlite_connection(tmp_path: Path) -> None:
    """What --sqlite-sync sets is the connection's PRAGMA (no client can observe an fsync)."""
    for sync, pragma in (("normal", 1), ("full", 2)):
        store = open_store("sqlite", tmp_path / sync, sync)
        try:
            connection = store._db._db  # type: ignore[attr-defined]  # LocalStore -> sqlite3
            assert connection.execute("PRAGMA synchronous").fetchone() == (pragma,)
        finally:
            store._db.close()  # type: ignore[attr-defined]


def test_ctrl_c_while_the_agents_module_loads_ends_quietly(tmp_path: Path) -> None:
    loading = tmp_path / "loading"
    (tmp_path / "slowmod.py").write_text(
        f"import pathlib, time\npathlib.Path({str(loading)!r}).touch()\ntime.sleep(60)\n"
    )
    server = Serving(tmp_path, "slowmod:app")
    deadline = time.monotonic() + 30
    while not loading.exists():
        assert time.monotonic() < deadline and server.process.poll() is None, server.output()
        time.sleep(0.02)
    code = server.stop(signal.SIGINT)
    out = server.output()
    assert "Aborted" not in out
    assert "Traceback" not in out
    assert code == 130
