"""`tether sessions`, `tether tail` with nothing listening, and a keyed server without a key.

Real `tether serve` children, the real `tether` command through pipes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from helpers.server import ServerFactory, TetherServer, find_free_port, tether_command

KEY = "test-key-0123456789abcdef"
#: A command that fails fast answers well within this (the SDK's own
#: reconnecting would go on for a minute).
FAST = 15.0


def tether(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tether_command(), *args], capture_output=True, text=True, timeout=60, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def without_key() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TETHER_API_KEY", None)
    env.pop("TETHER_URL", None)
    return env


def test_sessions_lists_the_callers_sessions(tether_server: ServerFactory) -> None:
    server = tether_server()
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        older = c.post("/v1/sessions", json={"title": "Groceries"}).json()["id"]
        newer = c.post("/v1/sessions", json={"title": "Trip to Lisbon"}).json()["id"]
    table = tether("sessions", "--url", server.base_url, env=without_key())
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TITLE", "STATUS", "UPDATED"]
    assert [line.split()[0] for line in lines[1:]] == [newer, older]  # latest first
    assert "Trip to Lisbon" in lines[1] and "idle" in lines[1]
    assert "Groceries" in lines[2]

    one = tether("sessions", "--url", server.base_url, "--limit", "1", "--json")
    assert one.returncode == 0, one.stderr
    listed = json.loads(one.stdout)
    assert [(s["id"], s["title"]) for s in listed] == [(newer, "Trip to Lisbon")]


def test_tail_says_it_connects_and_fails_fast_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{find_free_port()}"
    started = time.monotonic()
    proc = subprocess.run(
        [*tether_command(), "tail", "ses_any", "--url", url],
        capture_output=True, text=True, timeout=FAST, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert time.monotonic() - started < FAST
    assert proc.returncode != 0
    assert f"connecting to {url}" in proc.stderr
    assert f"cannot reach a tether server at {url}" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_keyed_server_without_a_key_says_how_to_give_one(tmp_path: Path) -> None:
    env = {**os.environ, "TETHER_API_KEYS": KEY}
    with TetherServer(tmp_path / "data", env=env) as server:
        url = server.base_url
        with httpx.Client(base_url=url, timeout=10) as c:
            auth = {"Authorization": f"Bearer {KEY}"}
            sid = c.post("/v1/sessions", json={"title": "Mine"}, headers=auth).json()["id"]
        refused = [
            tether("sessions", "--url", url, env=without_key()),
            tether("tail", sid, "--url", url, env=without_key()),
            tether("chat", "--url", url, env=without_key()),
        ]
        listed = tether("sessions", "--url", url, "--api-key", KEY, env=without_key())
        from_env = tether("sessions", "--url", url, env={**without_key(), "TETHER_API_KEY": KEY})
        wrong = tether("sessions", "--url", url, "--api-key", "not-the-key", env=without_key())
    for proc in refused:
        assert proc.returncode == 1
        assert f"the server at {url} needs an API key: set TETHER_API_KEY or pass --api-key" in (
            proc.stderr
        ), proc.stderr
    assert listed.returncode == 0 and sid in listed.stdout and "Mine" in listed.stdout
    assert from_env.returncode == 0 and sid in from_env.stdout
    assert wrong.returncode == 1 and "refused the API key" in wrong.stderr
    assert "not-the-key" not in wrong.stderr
