"""`tether chat` joining a session whose run waits on a person: it asks, then follows.

A real ``tether serve`` (with the agents of web.agents, helpers.waiting) and a
real ``tether chat`` through pipes. The run waits for an approval (and then for the tool's result)
before the chat starts; the chat that joins the session shows what it waits
for, asks it at the prompt as for a call that arrives live, and follows the
same run to its end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from helpers.server import tether_command
from helpers.waiting import SUSPEND_MODES, approver_server, waiting_approval, waiting_approval_in

CALL = 'delete_file({"path": "/tmp/report.txt"})'


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
        sid, run_id = waiting_approval(server.base_url)
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


@pytest.mark.parametrize("suspend_after", SUSPEND_MODES)
def test_a_chat_answers_an_approval_that_waited_through_a_server_crash(
    tmp_path: Path, suspend_after: str
) -> None:
    """kill -9 while the approval waits (live, or suspended in the log); restarted
    on the same data, the server has the run open still; a chat that joins then
    asks the same question (the same call), and the same run goes on to its end, once."""
    first = approver_server(tmp_path / "data", suspend_after).start()
    try:
        sid, run_id = waiting_approval_in(first.base_url, suspend_after)
        call_id = httpx.get(f"{first.base_url}/v1/sessions/{sid}", timeout=10).json()[
            "messages"][-1]["parts"][0]["tool_call_id"]  # fmt: skip
    finally:
        first.kill()
    with approver_server(tmp_path / "data", suspend_after, first.port, 1) as server:
        out = chat(server.base_url, sid, ["y", '"gone"'])
        log = httpx.get(f"{server.base_url}/v1/stream/sessions/{sid}?offset=-1", timeout=10).json()
    assert f"approve {CALL}? [y/N] " in out and f"result of {CALL}> " in out
    assert "Deleted: gone" in out and "[interrupted]" not in out
    ends = [e for e in log if e["type"] == "run-end"]
    assert [(e["run_id"], e["reason"]) for e in ends] == [(run_id, "complete")]
    assert [e["run_id"] for e in log if e["type"] == "run-start"] == [run_id]
    assert any(e["type"] == "run-resume" and e["run_id"] == run_id for e in log)
    calls = [e["tool_call_id"] for e in log if e["type"] == "part-start" and e.get("tool_call_id")]
    assert calls == [call_id]  # asked once: the continued run did not ask again under a new id
