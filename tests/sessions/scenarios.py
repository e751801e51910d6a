"""Real runs against a real ``tether serve``: one session per scenario, driven over HTTP.

The event contract test (every event parses into an SDK class and follows
docs/events.md) and the recorder of the golden fold fixtures
(tests/fixtures/folds/record.py) drive the same scenarios, so the fixtures
are what the contract test checks. The server must serve the demo model and
the ``approver`` agent of ``web.agents`` (see :func:`start_server`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers.server import TetherServer
from web.support import agents_env

Event = dict[str, Any]

#: Keys of the session snapshot that the fold produces (the rest is the session record).
FOLD_KEYS = ("status", "messages", "active_run", "queue", "last_error", "usage", "client_requests")


@contextmanager
def start_server(base: Path, *args: str) -> Iterator[TetherServer]:
    """A ``tether serve`` on SQLite (``base/data``) with the demo model and ``web.agents``."""
    server = TetherServer(
        base / "data",
        log_path=base / "server.log",
        extra_args=["web.agents:app", *args],
        env=agents_env(),
    )
    with server:
        yield server


@dataclass(slots=True)
class Recording:
    """What a scenario left: its session's whole log, and the snapshot at its end."""

    name: str
    description: str
    session_id: str
    events: list[Event]
    #: The server's snapshot (the fold's keys only), complete up to the last of ``events``.
    snapshot: dict[str, Any]


class Driver:
    """One session on the server, and the HTTP calls a scenario makes on it."""

    def __init__(self, client: httpx.Client, **body: Any) -> None:
        self.client = client
        r = client.post("/v1/sessions", json=body)
        r.raise_for_status()
        self.id: str = r.json()["id"]

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.client.post(f"/v1/sessions/{self.id}{path}", json=body or {})
        assert r.status_code == 202, r.text
        return dict(r.json())

    def send(self, text: str) -> dict[str, Any]:
        return self.post("/messages", {"content": text})

    def edit(self, message_id: str, text: str) -> dict[str, Any]:
        r = self.client.patch(
            f"/v1/sessions/{self.id}/messages/{message_id}", json={"content": text}
        )
        assert r.status_code == 202, r.text
        return dict(r.json())

    def snapshot(self) -> dict[str, Any]:
        r = self.client.get(f"/v1/sessions/{self.id}")
        r.raise_for_status()
        return dict(r.json())

    def wait(self, done: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        """Poll the snapshot until ``done(snapshot)``; return that snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if done(snap):
                return snap
            assert time.monotonic() < deadline, f"session {self.id} stuck: {snap}"
            time.sleep(0.02)

    def settle(self) -> dict[str, Any]:
        """Wait until no run is active or queued."""
        return self.wait(lambda s: s["active_run"] is None and not s["queue"])

    def waiting_call(self) -> dict[str, Any]:
        """Wait until the run waits on a tool call; return that call's part."""
        snap = self.wait(lambda s: s["status"] == "paused")
        calls = [p for p in snap["messages"][-1]["parts"] if p["kind"] == "tool-call"]
        return dict(calls[-1])

    def record(self, name: str, description: str) -> Recording:
        """The log and the snapshot as they are now (the snapshot's offset bounds both)."""
        snap = self.snapshot()
        upto = int(snap["offset"].rsplit("_", 1)[-1])
        events = read_log(self.client, self.id)[:upto]
        fold = {k: snap[k] for k in FOLD_KEYS if k in snap}  # client_requests: when any
        return Recording(name, description, self.id, events, fold)


def read_log(client: httpx.Client, session_id: str) -> list[Event]:
    """A session's whole log, by catch-up reads of its stream (one event per offset)."""
    out: list[Event] = []
    offset = "-1"
    while True:
        r = client.get(f"/v1/stream/sessions/{session_id}", params={"offset": offset})
        r.raise_for_status()
        batch = r.json()
        out += batch
        offset = r.headers["stream-next-offset"]
        if r.headers.get("stream-up-to-date") == "true" or not batch:
            return out


def _text(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("hello there")
    d.settle()
    return d.record("text", "A plain message, echoed back a word per delta.")


def _reasoning(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("/reason why is the sky blue")
    d.settle()
    return d.record("reasoning", "/reason: a reasoning part, then the text part.")


def _tool_result(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send('/tool get_time {"tz": "UTC"}')
    call = d.waiting_call()
    d.post("/tool-results", {"tool_call_id": call["tool_call_id"], "output": {"time": "12:00"}})
    d.settle()
    return d.record("tool-result", "/tool: the run waits for a client's result, then answers.")


def _tool_waiting(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("/tool lookup {}")
    d.waiting_call()
    recording = d.record(
        "tool-waiting", "/tool, snapshot taken while the run waits: a streaming message."
    )
    call = d.waiting_call()
    d.post("/tool-results", {"tool_call_id": call["tool_call_id"], "error": "no such thing"})
    d.settle()
    return recording


def _approval(client: httpx.Client) -> Recording:
    d = Driver(client, agent="approver")
    d.send("clean up")
    call = d.waiting_call()
    d.post("/tool-approvals", {"tool_call_id": call["tool_call_id"], "approved": True})
    d.wait(lambda s: s["status"] == "paused" and s["messages"][-1]["parts"][-1].get("approval"))
    d.post("/tool-results", {"tool_call_id": call["tool_call_id"], "output": "ok"})
    d.settle()
    return d.record("approval", "An agent's tool call approved, then answered with a result.")


def _denial(client: httpx.Client) -> Recording:
    d = Driver(client, agent="approver")
    d.send("clean up")
    call = d.waiting_call()
    d.post(
        "/tool-approvals",
        {"tool_call_id": call["tool_call_id"], "approved": False, "reason": "keep it"},
    )
    d.settle()
    return d.record("denial", "An agent's tool call denied with a reason; the agent answers.")


def _retries(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("/fail 2 at last")
    d.settle()
    return d.record("retries", "/fail 2: two attempts fail and are retried, the third answers.")


def _discard(client: httpx.Client) -> Recording:
    d = Driver(client, agent="flaky")
    d.send("go")
    d.settle()
    return d.record(
        "discard", "An attempt fails after streaming text: the retry discards that part."
    )


def _error(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("/fail 9 never")
    d.settle()
    return d.record("error", "/fail 9: retried until the attempts run out; the run ends in error.")


def _cancel(client: httpx.Client) -> Recording:
    d = Driver(client)
    run = d.send("/count 500 20")
    d.wait(lambda s: any(p.get("text") for p in s["messages"][-1]["parts"]))
    d.post("/cancel", {"run_id": run["run_id"]})
    d.settle()
    return d.record("cancel", "A run stopped mid-answer: its message ends as cancelled.")


def _edit(client: httpx.Client) -> Recording:
    d = Driver(client)
    first = d.send("first version")
    d.settle()
    d.edit(first["message_id"], "second version")
    d.settle()
    return d.record("edit", "A user message edited: a sibling branch, answered afresh.")


def _regenerate(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("say it twice")
    answer = d.settle()["messages"][-1]
    d.post("/regenerate", {"message_id": answer["id"]})
    d.settle()
    return d.record("regenerate", "An answer regenerated: a second answer beside the first.")


def _branch(client: httpx.Client) -> Recording:
    d = Driver(client)
    first = d.send("first version")
    first_answer = d.settle()["messages"][-1]["id"]
    d.edit(first["message_id"], "second version")
    d.settle()
    r = client.patch(f"/v1/sessions/{d.id}", json={"active_branch": first_answer})
    assert r.status_code == 200, r.text
    return d.record("branch", "An edit, then the first branch chosen again: the snapshot shows it.")


def _context_trim(client: httpx.Client) -> Recording:
    d = Driver(client, agent="brief")
    d.send("/count 3 1")
    d.settle()
    d.send("/count 2 1")
    d.settle()
    return d.record(
        "context-trim", "A second turn past the model's context budget: the first is not sent."
    )


def _queue(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.send("/count 40 20")
    d.send("queued one")
    dropped = d.send("queued two")
    d.post("/cancel", {"run_id": dropped["run_id"]})
    d.settle()
    return d.record(
        "queue",
        "Two messages sent while a run is busy are queued; one is removed from the queue "
        "(its run ends as cancelled without starting), the other runs next.",
    )


#: A 1x1 PNG and a tiny PDF, base64: attachments small enough to stay in their event.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF_B64 = "JVBERi0xLjQKJSVFT0YK"


def _attachments(client: httpx.Client) -> Recording:
    d = Driver(client)
    d.post(
        "/messages",
        {
            "content": [
                {"type": "image", "media_type": "image/png", "data": PNG_B64, "name": "dot.png"},
                {"type": "file", "data": f"data:application/pdf;base64,{PDF_B64}", "name": "a.pdf"},
                {"type": "text", "text": "what are these"},
            ]
        },
    )
    d.settle()
    return d.record(
        "attachments",
        "A message with an image and a PDF (inline in its event); the snapshot says what "
        "they are (media type, name, size), not their bytes.",
    )


def _client_request(client: httpx.Client) -> Recording:
    d = Driver(client, agent="asker")
    d.send("Tidy up.")
    snap = d.wait(lambda s: s["status"] == "paused" and bool(s.get("client_requests")))
    request_id = snap["client_requests"][0]["request_id"]
    d.post("/client-responses", {"request_id": request_id, "result": {"confirmed": True}})
    d.settle()
    return d.record(
        "client-request",
        "An agent asks its client to confirm (the client channel); a client answers.",
    )


SCENARIOS: tuple[Callable[[httpx.Client], Recording], ...] = (
    _text,
    _reasoning,
    _tool_result,
    _tool_waiting,
    _approval,
    _denial,
    _retries,
    _discard,
    _error,
    _cancel,
    _edit,
    _context_trim,
    _regenerate,
    _branch,
    _queue,
    _attachments,
    _client_request,
)


def record_all(server: TetherServer) -> list[Recording]:
    """Run every scenario on ``server``, each in its own session."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return [scenario(client) for scenario in SCENARIOS]


def record_lost_run(base: Path) -> Recording:
    """A server killed mid-run of an agent that opts out of replay restarts with
    ``--retry-lost-runs``: the run is ended as interrupted, and answered again
    by a run that names it ``retry_of``."""
    with start_server(base, "--retry-lost-runs") as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            d = Driver(client, agent="fragile")
            d.send("count")
            d.wait(lambda s: len(s["messages"][-1]["parts"]) > 0)
        server.kill()
    with (
        start_server(base, "--retry-lost-runs") as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        d.client = client
        d.settle()
        return d.record(
            "lost-run",
            "The server is killed mid-run of an agent that does not replay; on restart "
            "the run ends as interrupted and is answered again (--retry-lost-runs), "
            "beside the lost answer.",
        )


def record_continued_run(base: Path) -> Recording:
    """Runs that outlive their server: a count cut by a kill continues after the
    restart (its cut attempt discarded); a run waiting on a client's result is
    suspended, the server killed, and the result, posted after the restart,
    finishes the same run from its journal."""
    suspend = ("--suspend-after", "0.1")
    with start_server(base, *suspend) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            d = Driver(client)
            d.send("/count 20 50")
            d.wait(lambda s: len(s["messages"][-1]["parts"]) > 0)
        server.kill()
    with start_server(base, *suspend) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            d.client = client
            d.settle()
            d.send("/tool lookup {}")
            d.wait(lambda s: (s["active_run"] or {}).get("suspended"))
        server.kill()
    with (
        start_server(base, *suspend) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        d.client = client
        call = d.waiting_call()
        d.post("/tool-results", {"tool_call_id": call["tool_call_id"], "output": "found"})
        d.settle()
        return d.record(
            "continued-run",
            "Killed mid-count, the run goes on after the restart (run-resume, its cut "
            "attempt discarded); suspended on a tool call, killed, restarted, the result "
            "finishes the same run from its journal.",
        )
