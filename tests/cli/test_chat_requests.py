"""`tether chat` answers the client requests of a run at the prompt (pexpect, real server).

The ``asker`` agent (web.agents) asks its client to confirm; the chat asks
the question at the prompt and sends the answer, in a chat that sent the
message and in one that joined the session while the request was pending.
"""

from __future__ import annotations

import re
from pathlib import Path

from cli.test_chat_terminal import PROMPT, Terminal, chat, terminals  # noqa: F401 (a fixture)
from helpers.waiting import approver_server
from tether.client import ClientRequest, Tether

QUESTION = re.escape("Delete the report? [y/N] ")


def test_a_confirm_is_answered_at_the_prompt(tmp_path: Path, terminals: list[Terminal]) -> None:  # noqa: F811
    with approver_server(tmp_path / "data") as server:
        term = chat(terminals, server, "--agent", "asker")
        term.type("tidy up")
        term.expect(QUESTION)
        term.type("y")
        term.expect("Deleted.")
        term.expect(PROMPT)


def test_a_chat_that_joins_a_session_answers_its_pending_request(
    tmp_path: Path,
    terminals: list[Terminal],  # noqa: F811
) -> None:
    with approver_server(tmp_path / "data") as server:
        with Tether(server.base_url) as client:
            sid = client.sessions.create(agent="asker").id
            client.send(sid, "tidy up")
            next(e for e in client.events(sid) if isinstance(e, ClientRequest))
        term = Terminal("--url", server.base_url, "--session", sid)
        terminals.append(term)
        term.expect(QUESTION)
        term.type("n")
        term.expect("Kept.")
        term.expect(PROMPT)
