"""The README's quick start, followed to the letter from a clean clone in a fresh environment.

One clone, one venv (what ``make serve`` makes: pip's cache is reused), two
checks: the serve command as written, then the ``tether chat`` block as
written answers ``/count 3``; and the README's agent example, saved as
``mymodule.py`` in the current directory, served by the README's command,
answers. Slow (a venv is installed), so marked ``clean_clone``: CI runs it
with the rest (``make test``); ``-m 'not clean_clone'`` leaves it out locally.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.sse import events
from helpers.server import find_free_port

pytestmark = pytest.mark.clean_clone

ROOT = Path(__file__).parents[2]
#: ``make serve`` creates the venv and installs the runtime dependencies first.
INSTALL_TIMEOUT = 900.0


def readme() -> str:
    return (ROOT / "README.md").read_text()


def quick_start_blocks() -> list[str]:
    """The shell blocks of the README's Quick start section, as written."""
    section = readme().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)


def serve_command() -> str:
    """The Quick start's serve line, without its comment."""
    [line] = [ln for ln in quick_start_blocks()[0].splitlines() if ln.startswith("make serve")]
    return line.split("#", 1)[0].strip()


def chat_block() -> str:
    [block] = [b for b in quick_start_blocks() if "tether chat" in b]
    return block


def agent_example() -> tuple[str, str]:
    """The README's agent module (dedented) and the command that serves it."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", readme(), re.S | re.M)
    [code] = [textwrap.dedent(body) for _, body in blocks if '@app.agent("shouty")' in body]
    [command] = re.findall(r"run\s+`(tether serve mymodule:app)`", readme())
    return code, command


def fresh_env(port: int) -> dict[str, str]:
    """The environment of a new shell: no venv active, no tether settings but the port."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TETHER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env["TETHER_PORT"] = str(port)  # the tests' port, not the README's 4437 (it may be taken)
    env["TETHER_URL"] = f"http://127.0.0.1:{port}"
    return env


class Shell:
    """A shell script started in its own process group, output to a file."""

    def __init__(self, script: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", script],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as c:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log.read_text()
                try:
                    c.get(f"{url}/healthz")
                    return
                except httpx.TransportError:
                    time.sleep(0.1)
        raise AssertionError(f"nothing answered at {url}\n{self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM to the group (make and the server it runs); return once all have exited."""
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        self.process.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server may outlive make by a moment
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A clean clone of this checkout's HEAD."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = tmp_path / "tether"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "--quiet", head], check=True)
    yield target


def test_the_quick_start_from_a_clean_clone(clone: Path, tmp_path: Path) -> None:
    port = find_free_port()
    env = fresh_env(port)
    url = env["TETHER_URL"]

    server = Shell(serve_command(), clone, env, tmp_path / "serve.log")
    try:
        server.wait_http(url, INSTALL_TIMEOUT)
        chat = subprocess.run(
            ["bash", "-c", chat_block()],
            cwd=clone,
            env=env,
            input="/count 3\n",  # then end of input: Ctrl-D
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert chat.returncode == 0, chat.stderr
    assert re.search(r"\b1\s+2\s+3\b", chat.stdout), chat.stdout
    assert not (clone / ".venv" / "bin" / "pytest").exists()  # serving installs no dev extras

    code, command = agent_example()
    (clone / "mymodule.py").write_text(code)
    activate = chat_block().splitlines()[0]  # the Quick start's line that puts tether on PATH
    agents = Shell(f"{activate}\n{command}", clone, env, tmp_path / "agents.log")
    try:
        agents.wait_http(url, 60)
        with httpx.Client(base_url=url, timeout=30) as c:
            sid = c.post("/v1/sessions", json={"agent": "shouty"}).json()["id"]
            run = c.post(f"/v1/sessions/{sid}/messages", json={"content": "hello there"}).json()
            ends = [
                e
                for _, e in events(c, f"/v1/sessions/{sid}/events", until_run_end=run["run_id"])
                if e["type"] == "run-end"
            ]
            answer = c.get(f"/v1/sessions/{sid}").json()["messages"][-1]
    finally:
        agents.stop()
    assert [e["reason"] for e in ends] == ["complete"], agents.log.read_text()
    assert answer["parts"][-1]["text"].startswith("YOU SAID: HELLO THERE")
