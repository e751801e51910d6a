"""`tether chat` in a pseudo-terminal (pexpect) against a real `tether serve`.

What a person at a terminal sees: tool calls and approvals asked at the
prompt, Markdown rendered, "reconnecting" while the server is away and the
answer carried on after it restarts, the slash commands, Ctrl-C.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from helpers.server import ServerFactory, TetherServer, tether_command
from helpers.waiting import approver_server

#: Seconds any one expected output may take (a loaded 2-core machine, cold imports).
WAIT = 30
PROMPT = "you> "


class Terminal:
    """``tether chat`` in a pseudo-terminal of 40 rows by 100 columns."""

    def __init__(self, *args: str) -> None:
        self.child = pexpect.spawn(
            tether_command()[0], [*tether_command()[1:], "chat", *args],
            encoding="utf-8", timeout=WAIT, dimensions=(40, 100),
        )  # fmt: skip
        self.seen = ""  # everything read so far

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern`` (a regex); what came before it and the match."""
        self.child.expect(pattern)
        got = str(self.child.before) + str(self.child.after)
        self.seen += got
        return got

    def type(self, line: str) -> None:
        self.child.sendline(line)

    def interrupt(self) -> None:
        self.child.sendintr()

    def ended(self) -> int:
        """Wait for the chat to exit; its exit status."""
        self.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus is not None, "killed by a signal"
        return self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    """Chats to close at the end of the test, however it ends."""
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def chat(terminals: list[Terminal], server: TetherServer, *args: str) -> Terminal:
    """A chat, once it has said which session it is in and shown its prompt."""
    term = Terminal("--url", server.base_url, *args)
    terminals.append(term)
    term.expect("session ses_")
    term.expect(PROMPT)
    return term


def counted(first: int, last: int) -> str:
    """The pattern of the demo model counting from ``first`` to ``last``."""
    return r"(?<!\d)" + " ".join(str(n) for n in range(first, last + 1)) + r"(?!\d)"


def sessions_of(server: TetherServer) -> list[dict[str, object]]:
    sessions = httpx.get(f"{server.base_url}/v1/sessions", timeout=10).json()["sessions"]
    return list(sessions)


def test_tool_calls_and_approvals_are_answered_at_the_prompt(
    tmp_path: Path, terminals: list[Terminal]
) -> None:
    """An approval (the approver agent's call of a tool a person must approve) and a
    client tool's result, both typed at the prompt; the answer's Markdown rendered."""
    with approver_server(tmp_path / "data") as server:
        term = chat(terminals, server, "--agent", "approver")
        term.type("clean up")
        term.expect(re.escape('approve delete_file({"path": "/tmp/report.txt"})? [y/N] '))
        term.type("y")
        term.expect(re.escape('result of delete_file({"path": "/tmp/report.txt"})> '))
        term.type('"gone"')
        term.expect("Deleted: gone")
        term.expect(PROMPT)
        term.type("/model demo")  # the demo model, whose /tool asks the client for a tool
        term.expect(PROMPT)
        term.type('/tool get_time {"tz": "UTC"}')
        term.expect(re.escape('result of get_time({"tz": "UTC"})> '))
        term.type('"**noon**"')
        # Rendered: "noon" in bold, not the asterisks.
        term.expect(re.escape("Tool get_time returned: \x1b[1mnoon\x1b[0m"))
        term.expect(PROMPT)
        term.type('/tool get_time {"tz": "Mars/Olympus"}')
        term.expect(re.escape('result of get_time({"tz": "Mars/Olympus"})> '))
        term.type("!no such time zone")  # an error, not a result
        term.expect("Tool get_time failed: no such time zone")
        term.expect(PROMPT)
        term.type("/quit")
        assert term.ended() == 0
        sessions = sessions_of(server)
    assert {(s["agent"], s["model"]) for s in sessions} == {(None, "demo"), ("approver", None)}


def test_the_chat_says_reconnecting_and_carries_on_after_a_server_restart(
    tether_server: ServerFactory, terminals: list[Terminal]
) -> None:
    server = tether_server()
    term = chat(terminals, server)
    term.type("/count 300 20")
    term.expect(counted(10, 11))  # the answer is streaming
    server.kill()
    term.expect("reconnecting… \\(the server at http://127.0.0.1:\\d+ is away\\)")
    tether_server(server.data_dir, port=server.port)  # the same address and data
    term.expect("reconnected")
    after = term.expect(PROMPT)
    assert re.search(counted(298, 300), after), after  # the same answer, to its end
    assert "(interrupted)" not in term.seen
    term.type("/count 3")
    assert re.search(counted(1, 3), term.expect(PROMPT))


def test_the_slash_commands_do_what_they_say(
    tether_server: ServerFactory, terminals: list[Terminal]
) -> None:
    server = tether_server()
    term = chat(terminals, server)
    first = sessions_of(server)[0]["id"]
    term.type("/help")
    assert "/system TEXT" in term.expect(PROMPT)
    term.type("/system Answer in French.")
    assert "system prompt set" in term.expect(PROMPT)
    term.type("/system")
    assert "system prompt: Answer in French." in term.expect(PROMPT)
    term.type("/model no-such-model")
    assert "no-such-model" in term.expect(PROMPT)  # refused; the chat goes on
    term.type("/model demo")
    assert "model demo" in term.expect(PROMPT)
    term.type("/new")
    term.expect(PROMPT)
    term.type("//count 2")  # a message that starts with "/": the demo model counts
    assert re.search(counted(1, 2), term.expect(PROMPT))
    made = sessions_of(server)
    term.type("/sessions")
    listed = term.expect(PROMPT)
    term.type("first line\\")
    term.expect(re.escape("...> "))
    term.type("second line")
    assert "You said: first line second line" in term.expect(PROMPT)
    term.type("/quit")
    assert term.ended() == 0
    assert len(made) == 4 and first in {s["id"] for s in made}
    for s in made:
        assert s["id"] in listed
    current = made[0]["id"]  # latest first: the /new one, where "/count 2" went
    assert f"{current} *" in listed
    snap = httpx.get(f"{server.base_url}/v1/sessions/{current}", timeout=10).json()
    assert snap["system"] == "Answer in French." and snap["model"] == "demo"
    sent = [m["parts"][0]["text"] for m in snap["messages"] if m["role"] == "user"]
    assert sent == ["/count 2", "first line\nsecond line"]


def test_ctrl_c_cancels_the_answer_then_quits_cleanly(
    tether_server: ServerFactory, terminals: list[Terminal]
) -> None:
    server = tether_server()
    term = chat(terminals, server)
    term.type("/count 5000 20")
    term.expect(counted(10, 11))
    term.interrupt()
    term.expect("cancelling this answer")
    term.expect(r"\(cancelled\)")
    term.expect(PROMPT)
    term.interrupt()
    assert term.ended() == 0
    assert "Aborted" not in term.seen and "Traceback" not in term.seen
    session = sessions_of(server)[0]
    assert session["status"] == "idle"


def test_an_unknown_session_is_refused_at_once(
    tether_server: ServerFactory, terminals: list[Terminal]
) -> None:
    server = tether_server()
    started = time.monotonic()
    term = Terminal("--url", server.base_url, "--session", "ses_nope")
    terminals.append(term)
    assert term.ended() == 1
    assert time.monotonic() - started < WAIT
    assert f"no session 'ses_nope' at {server.base_url}" in term.seen
    assert "Traceback" not in term.seen
    assert sessions_of(server) == []  # nothing was made instead


def test_a_session_rejoined_shows_its_conversation(
    tether_server: ServerFactory, terminals: list[Terminal]
) -> None:
    server = tether_server()
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        c.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 4"})
        with c.stream("GET", f"/v1/sessions/{sid}/events") as events:
            for line in events.iter_lines():
                if '"type":"run-end"' in line.replace(" ", ""):
                    break
    term = chat(terminals, server, "--session", sid)
    shown = term.seen
    assert "you> /count 4" in shown and re.search(counted(1, 4), shown)
    assert shown.index("/count 4") < shown.index(f"session {sid}")
    term.type("/count 2")
    assert re.search(counted(1, 2), term.expect(PROMPT))


def at_line_start(pattern: str) -> str:
    """``pattern`` at the start of a line, after any terminal escape codes."""
    return r"\n(?:\x1b\[[\d;?]*[a-zA-Z])*" + pattern


def test_reasoning_retries_and_errors_are_set_apart_from_the_answer(
    tether_server: ServerFactory, terminals: list[Terminal]
) -> None:
    server = tether_server()
    term = chat(terminals, server)
    term.type("/reason hi")
    shown = term.expect(PROMPT)
    # Dim italic and marked, on its own line, before the answer.
    thinking = re.search(at_line_start(re.escape("\x1b[2;3mthinking: ")), shown)
    answer = re.search(at_line_start("You said: hi"), shown)
    assert thinking and answer and thinking.start() < answer.start(), shown
    term.type("/fail 1 ok")
    shown = term.expect(PROMPT)
    retry = re.search(at_line_start(r"retry 1 in [\d.]+ s: demo: simulated upstream"), shown)
    answer = re.search(at_line_start("You said: ok"), shown)
    assert retry and answer and retry.start() < answer.start(), shown
    term.type("/fail 5 never")  # the run gives up after its last attempt
    shown = term.expect(PROMPT)
    failed = r"error \(\w+\): demo: simulated upstream failure \(attempt 5 of 5 failing\)"
    assert re.search(at_line_start(failed), shown), shown
    assert "You said: never" not in shown
