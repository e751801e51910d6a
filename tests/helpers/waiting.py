"""A run that waits on a person, on a real ``tether serve``: what the tests of issue 19's
clients (the SDK, ``tether chat``, the web UI) share.

The approver agent of ``web.agents`` asks to run ``delete_file``, waits for a
person's approval, then for the tool's result, then says ``Deleted: {result}``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.server import TetherServer
from tether.client import RunSuspend, Status, Tether
from web.support import agents_env

#: The server's --suspend-after in the two ways a run waits: live (it keeps its
#: task; a crash then leaves it open, and the restarted server continues it) and
#: suspended in the log (no task; an answer continues it).
SUSPEND_MODES = [
    pytest.param("3600", id="waiting-live"),
    pytest.param("0.3", id="suspended"),
]


def approver_server(
    data_dir: Path,
    suspend_after: str = "3600",
    port: int | None = None,
    n: int = 0,
    *options: str,
) -> TetherServer:
    """A server (not started) with the agents of web.agents; ``n`` names its log."""
    return TetherServer(
        data_dir,
        port=port,
        log_path=data_dir.parent / f"server-{n}.log",
        extra_args=["web.agents:app", "--suspend-after", suspend_after, *options],
        env=agents_env(),
    )


def waiting_approval(base_url: str) -> tuple[str, str]:
    """A session of the approver whose run waits for an approval: (session, run)."""
    with Tether(base_url) as client:
        session = client.sessions.create(agent="approver")
        run = client.send(session.id, "clean up")
        for ev in client.events(session.id):
            if isinstance(ev, Status) and ev.status == "paused":
                return session.id, run.run_id
    raise AssertionError("the session ended before its run waited")


def waiting_approval_in(base_url: str, suspend_after: str) -> tuple[str, str]:
    """As :func:`waiting_approval`, and suspended in the log if the server suspends."""
    session_id, run_id = waiting_approval(base_url)
    if float(suspend_after) < 60:
        wait_suspended(base_url, session_id)
    return session_id, run_id


def wait_suspended(base_url: str, session_id: str, timeout: float = 10.0) -> None:
    """Until the session's run is suspended; fails if other events keep coming instead."""
    deadline = time.monotonic() + timeout
    with Tether(base_url) as client:
        for ev in client.events(session_id):
            if isinstance(ev, RunSuspend):
                return
            assert time.monotonic() < deadline, f"no run-suspend within {timeout:g} s"
    raise AssertionError("the session ended before its run was suspended")
