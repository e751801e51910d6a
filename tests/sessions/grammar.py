"""The event grammar of docs/events.md as a checker: a session's log in, violations out.

Pure (no I/O): it reads a list of events in log order and says, in words, every
place where the log breaks a rule of the document. The contract test runs it
over the logs of real runs; tests/sessions/test_grammar.py shows it rejects the
logs the rules forbid, so that a green contract test means something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.sessions import events as ev

Event = dict[str, Any]

MESSAGE_STATUSES = frozenset({"complete", *ev.END_REASONS})
QUEUE_KINDS = frozenset({"message", "regenerate", "continue"})
KNOWN = ev.INPUTS | ev.OUTPUTS | ev.STATE


@dataclass(slots=True)
class _Run:
    started: bool = False
    ended: bool = False
    trigger: str | None = None
    message_id: str | None = None
    attempts: int = 0


@dataclass(slots=True)
class _Message:
    run_id: str | None
    ended: bool = False
    parts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    needs_approval: bool
    approved: bool | None = None
    answered: bool = False


class Grammar:
    """Follows one session's log; :attr:`problems` lists every rule broken so far."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.active: str | None = None
        self.runs: dict[str, _Run] = {}
        self.queued: set[str] = set()
        self.messages: dict[str, _Message] = {}
        #: part id -> "open", "ended" or "discarded".
        self.parts: dict[str, str] = {}
        #: The reasoning parts (whose part-end may carry a signature or redacted data).
        self.reasoning: set[str] = set()
        #: Tool-call parts whose part-start had their whole arguments (no deltas follow).
        self.arguments: dict[str, Any] = {}
        self.calls: dict[str, _Call] = {}
        #: Client requests (the client channel): request id -> answered.
        self.requests: dict[str, bool] = {}
        self.ids: set[str] = set()
        self._expect: tuple[str, dict[str, Any]] | None = None
        self._at = 0

    def problem(self, text: str) -> None:
        self.problems.append(f"event {self._at}: {text}")

    def check(self, events: list[Event], *, finished: bool = True) -> list[str]:
        """Apply every event; with ``finished``, the log must also end with no run open."""
        for e in events:
            self.apply(e)
        if finished:
            self._at = len(events)
            if self.active is not None:
                self.problem(f"the log ends with run {self.active} still active")
            if self._expect is not None:
                self.problem(f"the log ends before the {self._expect[0]} that must follow")
        return self.problems

    def apply(self, e: Event) -> None:
        self._at += 1
        kind = e.get("type")
        if kind not in KNOWN:
            self.problem(f"unknown event type {kind!r}")
            return
        self._envelope(e)
        self._follows(e)
        run_id = e.get("run_id")
        if run_id is not None and kind not in (ev.RUN_START, ev.RUN_END, ev.CANCEL, ev.SUBMIT):
            run = self.runs.get(run_id)
            if run is None or not run.started or run.ended or run_id != self.active:
                self.problem(f"{kind} of run {run_id}, which is not the active run")
        getattr(self, "_" + kind.replace("-", "_"))(e)

    def _envelope(self, e: Event) -> None:
        eid = e.get("id")
        if not isinstance(eid, str) or eid in self.ids:
            self.problem(f"{e['type']} without a unique id: {eid!r}")
        else:
            self.ids.add(eid)
        if not isinstance(e.get("ts"), int | float):
            self.problem(f"{e['type']} without a ts")

    def _follows(self, e: Event) -> None:
        """Events written in one batch: run-start then status running, run-end then a status..."""
        if self._expect is None:
            return
        kind, fields = self._expect
        self._expect = None
        if e["type"] != kind or any(e.get(k) != v for k, v in fields.items()):
            self.problem(f"{e['type']} where {kind} {fields} must follow")

    # -- inputs ------------------------------------------------------------------

    def _user_message(self, e: Event) -> None:
        mid = e.get("message_id")
        if mid in self.messages:
            self.problem(f"user-message {mid} placed twice")
        parent = e.get("parent_id")
        if parent is not None and parent not in self.messages:
            self.problem(f"user-message {mid} under an unknown parent {parent}")
        if e.get("edit_of") is not None and e["edit_of"] not in self.messages:
            self.problem(f"user-message {mid} edits an unknown message")
        parts = e.get("parts")
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            self.problem(f"user-message {mid} without a list of parts")
        self.messages[mid] = _Message(None, ended=True)

    def _regenerate(self, e: Event) -> None:
        pass  # in the vocabulary, never written: a regenerate is a queued run (queue-update)

    def _cancel(self, e: Event) -> None:
        if (e.get("run_id") is None) == (not e.get("all")):
            self.problem("cancel must name a run_id or say all, not both or neither")

    def _submit(self, e: Event) -> None:
        self._queue_item(e)

    def _tool_result(self, e: Event) -> None:
        call = self.calls.get(e.get("tool_call_id", ""))
        if call is None:
            self.problem(f"tool-result for an unknown tool call {e.get('tool_call_id')}")
            return
        if call.answered:
            self.problem(f"a second tool-result for {e['tool_call_id']}")
        if ("output" in e) and ("error" in e):
            self.problem("tool-result with both an output and an error")
        call.answered = True

    def _tool_approval(self, e: Event) -> None:
        call = self.calls.get(e.get("tool_call_id", ""))
        if call is None or not call.needs_approval:
            self.problem(f"tool-approval for a call that asked none: {e.get('tool_call_id')}")
            return
        if call.approved is not None or call.answered:
            self.problem(f"tool-approval for {e['tool_call_id']} after its answer")
        if not isinstance(e.get("approved"), bool):
            self.problem("tool-approval without approved: true or false")
        call.approved = bool(e.get("approved"))

    def _client_response(self, e: Event) -> None:
        rid = e.get("request_id", "")
        if rid not in self.requests:
            self.problem(f"client-response to an unknown request {rid}")
            return
        if self.requests[rid]:
            self.problem(f"a second client-response to {rid}")
        error = e.get("error")
        if "result" in e and error is not None:
            self.problem("client-response with both a result and an error")
        if error is not None and not (
            isinstance(error, dict)
            and isinstance(error.get("code"), int)
            and isinstance(error.get("message"), str)
        ):
            self.problem(f"client-response to {rid} with an error that is not {{code, message}}")
        self.requests[rid] = True

    # -- outputs ----------------------------------------------------------------

    def _client_request(self, e: Event) -> None:
        rid = e.get("request_id")
        if not isinstance(rid, str) or rid in self.requests:
            self.problem(f"client-request without a new request_id: {rid!r}")
            return
        if not isinstance(e.get("method"), str) or not e["method"]:
            self.problem(f"client-request {rid} without a method")
        self.requests[rid] = False

    def _run_start(self, e: Event) -> None:
        run_id = e.get("run_id", "")
        run = self.runs.setdefault(run_id, _Run())
        if run.started or run.ended:
            self.problem(f"run-start of run {run_id}, which already started or ended")
        if self.active is not None:
            self.problem(f"run-start of {run_id} while run {self.active} is active")
        if e.get("trigger") not in self.messages:
            self.problem(f"run-start of {run_id} for an unknown message {e.get('trigger')}")
        self.queued.discard(run_id)
        run.started, run.trigger = True, e.get("trigger")
        self.active = run_id
        self._expect = (ev.STATUS, {"status": ev.RUNNING})

    def _message_start(self, e: Event) -> None:
        mid = e.get("message_id", "")
        if mid in self.messages:
            self.problem(f"message-start of {mid}, which exists")
        run_id = e.get("run_id")
        if run_id is not None:
            run = self.runs.get(run_id)
            if run is not None and run.message_id is not None:
                self.problem(f"a second message-start in run {run_id}")
            if run is not None and e.get("parent_id") != run.trigger:
                self.problem(f"message-start of {mid} not under its run's trigger")
            if run is not None:
                run.message_id = mid
        elif e.get("parent_id") is not None and e["parent_id"] not in self.messages:
            self.problem(f"message-start of {mid} under an unknown parent")
        self.messages[mid] = _Message(run_id)

    def _part_start(self, e: Event) -> None:
        msg = self.messages.get(e.get("message_id", ""))
        pid = e.get("part_id", "")
        if msg is None or msg.ended:
            self.problem(f"part-start of {pid} outside an open message")
        elif msg.run_id != e.get("run_id"):
            self.problem(f"part-start of {pid} in another run's message")
        if pid in self.parts:
            self.problem(f"part-start of {pid}, which exists")
        if e.get("kind") not in ev.PART_KINDS:
            self.problem(f"part-start of {pid} with an unknown kind {e.get('kind')!r}")
        if e.get("kind") == ev.TOOL_CALL:
            call_id = e.get("tool_call_id")
            if not call_id or not e.get("tool_name") or call_id in self.calls:
                self.problem(f"tool-call part {pid} without a new tool_call_id and a tool_name")
            else:
                self.calls[call_id] = _Call(bool(e.get("needs_approval")))
        if "arguments" in e:
            if e.get("kind") != ev.TOOL_CALL:
                self.problem(f"part-start of {pid} with arguments but not a tool call")
            self.arguments[pid] = e["arguments"]
        self.parts[pid] = "open"
        if e.get("kind") == ev.REASONING:
            self.reasoning.add(pid)
        if msg is not None:
            msg.parts.append(pid)

    def _part_delta(self, e: Event) -> None:
        if self.parts.get(e.get("part_id", "")) != "open":
            self.problem(f"part-delta of {e.get('part_id')}, which is not open")
        if not isinstance(e.get("delta"), str) or not e["delta"]:
            self.problem("part-delta without a non-empty delta")
        if e.get("part_id") in self.arguments:
            self.problem(f"part-delta of {e.get('part_id')}, whose arguments came whole")

    def _part_end(self, e: Event) -> None:
        pid = e.get("part_id", "")
        if self.parts.get(pid) != "open":
            self.problem(f"part-end of {pid}, which is not open")
        for key in ("signature", "redacted"):
            if key in e and (pid not in self.reasoning or not isinstance(e[key], str)):
                self.problem(f"part-end of {pid} with a {key} but not a reasoning part's string")
        if pid in self.arguments and e.get("value") != self.arguments[pid]:
            self.problem(f"part-end of {pid} with other arguments than its part-start's")
        self.parts[pid] = "ended"

    def _message_end(self, e: Event) -> None:
        mid = e.get("message_id", "")
        msg = self.messages.get(mid)
        if msg is None or msg.ended:
            self.problem(f"message-end of {mid}, which is not open")
            return
        if any(self.parts[p] in ("open", "cut") for p in msg.parts):
            self.problem(f"message-end of {mid} with a part still open")
        if e.get("status", "complete") not in MESSAGE_STATUSES:
            self.problem(f"message-end with an unknown status {e.get('status')!r}")
        msg.ended = True

    def _retry(self, e: Event) -> None:
        run = self.runs.get(e.get("run_id", ""))
        if run is None:
            return  # reported as not the active run
        run.attempts += 1
        if e.get("attempt") != run.attempts:
            self.problem(f"retry attempt {e.get('attempt')} where {run.attempts} is next")
        if not isinstance(e.get("delay_ms"), int) or e["delay_ms"] < 0:
            self.problem("retry without a delay_ms")
        mine = self.messages[run.message_id].parts if run.message_id in self.messages else []
        for pid in e.get("discard", []):
            if pid not in mine or self.parts.get(pid) not in ("ended", "cut"):
                self.problem(f"retry discards {pid}, not an ended part of this run's message")
            self.parts[pid] = "discarded"

    def _journal(self, e: Event) -> None:
        if e.get("op") not in ("model", "call", "step", "request") or not isinstance(
            e.get("key"), str
        ):
            self.problem("journal without an op (model, call, step or request) and a key")
        if not isinstance(e.get("parts"), int) or e["parts"] < 0:
            self.problem("journal without a whole number of parts")

    def _run_suspend(self, e: Event) -> None:
        waiting = e.get("waiting")
        if not isinstance(waiting, list) or not waiting:
            self.problem("run-suspend without what it waits for")
            return
        for wait in waiting:
            if wait.get("for") == "request":
                if wait.get("request_id") not in self.requests:
                    self.problem(f"run-suspend waits for an unknown client request: {wait}")
                continue
            call = self.calls.get(wait.get("tool_call_id", ""))
            if call is None or wait.get("for") not in ("result", "approval"):
                self.problem(f"run-suspend waits for {wait}, not a result or approval of a call")

    def _run_resume(self, e: Event) -> None:
        run = self.runs.get(e.get("run_id", ""))
        if not isinstance(e.get("worker"), str) or not isinstance(e.get("replayed"), int):
            self.problem("run-resume without a worker and a count of replayed steps")
        if run is None:
            return
        run.attempts = 0  # retries are numbered afresh after a resume
        # What the execution before was streaming when it was cut: a retry discards it.
        for pid in self.messages[run.message_id].parts if run.message_id in self.messages else []:
            if self.parts.get(pid) == "open":
                self.parts[pid] = "cut"

    def _context_trim(self, e: Event) -> None:
        for key in ("dropped", "tokens", "budget"):
            if not isinstance(e.get(key), int) or e[key] < (1 if key == "dropped" else 0):
                self.problem(f"context-trim without a whole number {key}")

    def _error(self, e: Event) -> None:
        if e.get("run_id") is not None:
            self._expect = (ev.RUN_END, {"run_id": e["run_id"], "reason": ev.FAILED})
        if not e.get("code") or not isinstance(e.get("message"), str):
            self.problem("error without a code and a message")

    def _run_end(self, e: Event) -> None:
        run_id = e.get("run_id", "")
        run = self.runs.setdefault(run_id, _Run())
        reason = e.get("reason")
        if run.ended:
            self.problem(f"a second run-end of run {run_id}")
        if reason not in ev.END_REASONS:
            self.problem(f"run-end of {run_id} with an unknown reason {reason!r}")
        if run.started:
            if run_id != self.active:
                self.problem(f"run-end of {run_id}, which is not the active run")
            msg = self.messages.get(run.message_id or "")
            if reason == ev.COMPLETE and (msg is None or not msg.ended):
                self.problem(f"run {run_id} complete without its message-end")
            self.active = None
            after = ev.ERRORED if reason == ev.FAILED else ev.IDLE
            self._expect = (ev.STATUS, {"status": after})
        elif run_id not in self.queued or reason != ev.CANCELLED:
            self.problem(f"run-end of {run_id}, never started: only a queued run, cancelled")
        self.queued.discard(run_id)
        run.ended = True

    # -- session state -------------------------------------------------------------

    def _status(self, e: Event) -> None:
        status = e.get("status")
        if status not in ev.STATUSES:
            self.problem(f"unknown status {status!r}")
        elif (status in (ev.IDLE, ev.ERRORED)) != (self.active is None):
            self.problem(f"status {status} while the active run is {self.active}")

    def _queue_update(self, e: Event) -> None:
        queue = e.get("queue")
        if not isinstance(queue, list):
            self.problem("queue-update without a queue")
            return
        for item in queue:
            self._queue_item(item)

    def _active_branch(self, e: Event) -> None:
        if e.get("message_id") not in self.messages:
            self.problem(f"active-branch ends at an unknown message {e.get('message_id')!r}")

    def _queue_item(self, item: dict[str, Any]) -> None:
        run_id = item.get("run_id", "")
        run = self.runs.get(run_id)
        if run is not None and (run.started or run.ended):
            self.problem(f"run {run_id} queued after it started or ended")
        if item.get("kind") not in QUEUE_KINDS or not item.get("message_id"):
            self.problem(f"queued run {run_id} without a kind and a message_id")
        self.queued.add(run_id)


def violations(events: list[Event], *, finished: bool = True) -> list[str]:
    """Every rule of docs/events.md that ``events`` (one session's log) breaks."""
    return Grammar().check(events, finished=finished)
