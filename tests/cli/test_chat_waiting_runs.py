"""`tether chat` joining a session whose run waits on a person: it asks, then follows.

A real ``tether serve`` (with the agents of web.agents) and a real ``tether chat``
through pipes. The run waits for an approval (and then for the tool's result)
before the chat starts; the chat that joins the session shows what it waits
for, asks it at the prompt as for a call that arrives live, and follows the
same run to its end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from helpers.server import TetherServer, tether_command
from tether.client import Status, Tether
from web.support import agents_env

CALL = 'delete_file({"path": "/tmp/report.txt"})'


def approver_server(data_dir: Path, port: int | None = None) -> TetherServer:
    return TetherServer(
        data_dir,
        port=port,
        log_path=data_dir.parent / f"server-{port or 'first'}.log",
        extra_args=["web.agents:app"],
        env=agents_env(),
    )


def ask_and_wait(base_url: str) -> tuple[str, str]:
    """A session of the approver agent whose run waits for an approval: (session, run)."""
    with Tether(base_url) as client:
        session = client.sessions.create(agent="approver")
        run = client.send(session.id, "clean up")
        for ev in client.events(session.id):
            if isinstance(ev, Status) and ev.status == "paused":
                return session.id, run.run_id
    raise AssertionError("the session ended before its run waited")


def chat(base_url: str, session_id: str, lines: list[str]) -> str:
    proc = subprocess.run(
        [*tether_command(), "chat", "--url", base_url, "--session", session_id],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_chat_that_joins_asks_the_waiting_approval_and_follows_the_run(tmp_path: Path) -> None:
    with approver_server(tmp_path / "data") as server:
        sid, run_id = ask_and_wait(server.base_url)
        out = chat(server.base_url, sid, ["y", '"gone"'])
        snap = httpx.get(f"{server.base_url}/v1/sessions/{sid}", timeout=10).json()
    assert f"approve {CALL}? [y/N] " in out
    assert f"result of {CALL}> " in out
    assert "Deleted: gone" in out
    assert out.index("? [y/N]") < out.index("result of") < out.index("Deleted: gone")
    assert out.rstrip().endswith("you>")  # the run ended; the chat waited for a new message
    answer = snap["messages"][-1]
    assert snap["status"] == "idle" and answer["run_id"] == run_id
    assert answer["status"] == "complete" and answer["parts"][-1]["text"] == "Deleted: gone"
