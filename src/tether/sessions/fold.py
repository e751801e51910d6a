"""The fold of a session's events into its conversation.

A late joiner gets ``snapshot()`` (complete up to an offset) instead of
thousands of deltas, then follows the live events from that offset: applying
those to the snapshot's fold gives what a reader who saw everything has, with
nothing twice. Messages form a tree: editing a user message or regenerating an
answer adds a sibling, and the current branch is the path from the root to the
newest message placed (its ``leaf``), or to the message an ``active-branch``
event chose since.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tether.sessions import events as ev
from tether.sessions.events import Event

#: The kinds of a user message's attachment parts (sessions/attachments.py).
_ATTACHMENTS = ("image", "file")


@dataclass(slots=True)
class Part:
    id: str
    kind: str
    text: str = ""
    #: Final structured value (tool-call arguments, a source, a file...).
    value: Any = None
    done: bool = False
    tool_call_id: str | None = None
    tool_name: str | None = None
    result: Any = None
    error: str | None = None
    approval: dict[str, Any] | None = None
    needs_approval: bool = False
    #: A tool call has its tool-result (whose output may be null).
    answered: bool = False
    #: An image or file of a user message: its stored part (with its bytes or their stream).
    attachment: dict[str, Any] | None = None
    #: A reasoning part: the upstream's signature of it (given back with it in a later turn).
    signature: str | None = None
    #: A reasoning part the upstream gave encrypted (Anthropic's redacted_thinking data).
    redacted: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "done": self.done}
        if self.kind in (ev.TEXT, ev.REASONING) or self.text:
            out["text"] = self.text
        if self.attachment is not None:
            # What it is, not its bytes: those are read from the session's attachment route.
            for key in ("media_type", "name", "size", "url"):
                if key in self.attachment:
                    out[key] = self.attachment[key]
        for key in (
            "value", "tool_call_id", "tool_name", "result", "error", "approval", "signature",
            "redacted",
        ):  # fmt: skip
            v = getattr(self, key)
            if v is not None:
                out[key] = v
        if self.kind == ev.TOOL_CALL:
            out["needs_approval"] = self.needs_approval
        return out


@dataclass(slots=True)
class Message:
    id: str
    role: str
    parent_id: str | None
    parts: list[Part] = field(default_factory=list)
    #: streaming, complete, cancelled, error or interrupted.
    status: str = "complete"
    run_id: str | None = None
    usage: dict[str, Any] | None = None
    #: For an edited user message: the message it replaces on this branch.
    edit_of: str | None = None
    #: For a user message: the tools declared with it (names and definitions).
    tools: list[Any] = field(default_factory=list)
    #: The highest part number (``{message id}:{n}``) ever started in it, discarded
    #: parts included: a run that continues numbers its new parts after it.
    last_part: int = 0

    @property
    def text(self) -> str:
        """The message's text parts, joined (a property, as on the SDK's ``Message``)."""
        return "".join(p.text for p in self.parts if p.kind == ev.TEXT)


class SessionFold:
    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self.children: dict[str | None, list[str]] = {}
        self.leaf: str | None = None
        self.active_run: dict[str, Any] | None = None
        self.queue: list[dict[str, Any]] = []
        self.status: str = ev.IDLE
        self.last_error: dict[str, Any] | None = None
        #: Token counts of every message's usage in the log, summed (all branches).
        self.usage: dict[str, int] = {}
        #: run id -> "running" or why it ended: every run that started or ended.
        self.runs: dict[str, str] = {}
        #: Submitted runs that have neither started nor ended: run id -> (item, front).
        self.submitted: dict[str, tuple[dict[str, Any], bool]] = {}
        #: Runs a cancel named (or a cancel of everything reached) when it was appended.
        self.cancels: set[str] = set()
        #: run id -> its ``journal`` events, in log order, while the run is open.
        self.journals: dict[str, list[Event]] = {}
        self._parts: dict[str, tuple[Message, Part]] = {}
        self._tool_calls: dict[str, Part] = {}
        #: request id -> the client request, as the snapshot shows it (the client channel).
        self.client_requests: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()

    # -- applying events -----------------------------------------------------

    def apply(self, event: Event) -> None:
        """Apply one event; an event id seen before is ignored (dedup)."""
        eid = event.get("id")
        if eid is not None:
            if eid in self._seen:
                return
            self._seen.add(eid)
        handler = _HANDLERS.get(event.get("type", ""))
        if handler is not None:
            handler(self, event)

    def apply_all(self, events: list[Event]) -> None:
        for e in events:
            self.apply(e)

    def _place(self, msg: Message) -> None:
        self.messages[msg.id] = msg
        self.children.setdefault(msg.parent_id, []).append(msg.id)
        self.leaf = msg.id

    def _user_message(self, e: Event) -> None:
        if e["message_id"] in self.messages:
            return
        parent = e.get("parent_id")  # absent: a root message
        parts = [
            Part(
                f"{e['message_id']}:{i}", p.get("type", ev.TEXT), p.get("text", ""), done=True,
                attachment=p if p.get("type") in _ATTACHMENTS else None,
            )
            for i, p in enumerate(e.get("parts", []))
        ]  # fmt: skip
        msg = Message(e["message_id"], "user", parent, parts, "complete", edit_of=e.get("edit_of"))
        msg.tools = e.get("tools") or []
        self._place(msg)

    def _message_start(self, e: Event) -> None:
        if e["message_id"] in self.messages:
            return
        self._place(
            Message(
                e["message_id"],
                e.get("role", "assistant"),
                e.get("parent_id"),
                status="streaming",
                run_id=e.get("run_id"),
            )
        )

    def _part_start(self, e: Event) -> None:
        msg = self.messages.get(e["message_id"])
        if msg is None or e["part_id"] in self._parts:
            return
        part = Part(
            e["part_id"],
            e.get("kind", ev.TEXT),
            tool_call_id=e.get("tool_call_id"),
            tool_name=e.get("tool_name"),
            needs_approval=bool(e.get("needs_approval")),
        )
        msg.parts.append(part)
        self._parts[part.id] = (msg, part)
        number = part_number(part.id)
        if number > msg.last_part:
            msg.last_part = number
        if part.tool_call_id:
            self._tool_calls[part.tool_call_id] = part

    def _part_delta(self, e: Event) -> None:
        found = self._parts.get(e["part_id"])
        if found is not None:
            found[1].text += e.get("delta", "")

    def _part_end(self, e: Event) -> None:
        found = self._parts.get(e["part_id"])
        if found is None:
            return
        part = found[1]
        part.done = True
        if "value" in e:
            part.value = e["value"]
        if "text" in e:
            part.text = e["text"]
        if "signature" in e:
            part.signature = e["signature"]
        if "redacted" in e:
            part.redacted = e["redacted"]

    def _message_end(self, e: Event) -> None:
        for key, n in (e.get("usage") or {}).items():
            if isinstance(n, int):
                self.usage[key] = self.usage.get(key, 0) + n
        msg = self.messages.get(e["message_id"])
        if msg is None:
            return
        msg.status = e.get("status", "complete")
        msg.usage = e.get("usage", msg.usage)
        for part in msg.parts:
            part.done = True

    def _run_start(self, e: Event) -> None:
        self.active_run = {
            "run_id": e["run_id"],
            "trigger": e.get("trigger"),
            "model": e.get("model"),
            "started_at": e.get("ts"),
        }
        if e.get("retry_of"):
            self.active_run["retry_of"] = e["retry_of"]
        self.runs[e["run_id"]] = "running"
        self.submitted.pop(e["run_id"], None)
        self.status = ev.RUNNING

    def _run_end(self, e: Event) -> None:
        run_id = e["run_id"]
        reason = e.get("reason", ev.COMPLETE)
        self.runs[run_id] = reason
        self.submitted.pop(run_id, None)
        self.journals.pop(run_id, None)
        for msg in self.messages.values():
            if msg.run_id == run_id and msg.status == "streaming":
                msg.status = "complete" if reason == ev.COMPLETE else reason
                for part in msg.parts:
                    part.done = True
        if self.active_run is not None and self.active_run["run_id"] == run_id:
            self.active_run = None
            self.status = ev.IDLE

    def _retry(self, e: Event) -> None:
        for part_id in e.get("discard", []):
            found = self._parts.pop(part_id, None)
            if found is not None:
                found[0].parts.remove(found[1])

    def _journal(self, e: Event) -> None:
        if self.runs.get(e.get("run_id", "")) == "running":
            self.journals.setdefault(e["run_id"], []).append(e)

    def _run_suspend(self, e: Event) -> None:
        active = self.active_run
        if active is not None and active["run_id"] == e.get("run_id"):
            active["suspended"] = list(e.get("waiting", []))

    def _run_resume(self, e: Event) -> None:
        active = self.active_run
        if active is not None and active["run_id"] == e.get("run_id"):
            active.pop("suspended", None)

    def _error(self, e: Event) -> None:
        self.last_error = {"code": e.get("code"), "message": e.get("message")}

    def _tool_result(self, e: Event) -> None:
        part = self._tool_calls.get(e["tool_call_id"])
        if part is not None:
            part.result = e.get("output")
            part.error = e.get("error")
            part.answered = True

    def _tool_approval(self, e: Event) -> None:
        part = self._tool_calls.get(e["tool_call_id"])
        if part is not None:
            part.approval = {"approved": bool(e.get("approved")), "reason": e.get("reason")}
            if e.get("option_id") is not None:
                part.approval["option_id"] = e["option_id"]

    def _client_request(self, e: Event) -> None:
        rid = e.get("request_id")
        if not isinstance(rid, str) or rid in self.client_requests:
            return
        req: dict[str, Any] = {"request_id": rid, "method": e.get("method"), "answered": False}
        for key in ("params", "run_id", "expires_at"):
            if e.get(key) is not None:
                req[key] = e[key]
        msg = self.answer_of(e["run_id"]) if e.get("run_id") else None
        if msg is not None:
            req["message_id"] = msg.id
        self.client_requests[rid] = req

    def _client_response(self, e: Event) -> None:
        req = self.client_requests.get(e.get("request_id", ""))
        if req is None or req["answered"]:
            return  # the first answer is the answer
        req["answered"] = True
        if e.get("error") is not None:
            req["error"] = e["error"]
        else:
            req["result"] = e.get("result")  # absent: a result of null

    def _status(self, e: Event) -> None:
        self.status = e["status"]

    def _queue_update(self, e: Event) -> None:
        self.queue = list(e.get("queue", []))

    def _active_branch(self, e: Event) -> None:
        if e.get("message_id") in self.messages:  # the API only writes ids it knows
            self.leaf = e["message_id"]

    def _submit(self, e: Event) -> None:
        run_id = e["run_id"]
        if run_id not in self.runs:
            item = {k: v for k, v in e.items() if k not in ("type", "id", "ts", "front")}
            self.submitted[run_id] = (item, bool(e.get("front")))

    def _cancel(self, e: Event) -> None:
        run_id = e.get("run_id")
        if run_id is not None:
            self.cancels.add(run_id)
        elif e.get("all"):
            if self.active_run is not None:
                self.cancels.add(self.active_run["run_id"])
            self.cancels.update(q["run_id"] for q in self.queue)
            self.cancels.update(self.submitted)

    # -- reading -------------------------------------------------------------

    def branch(self, leaf: str | None = None) -> list[Message]:
        """Messages from the root to ``leaf`` (default: the current branch)."""
        out: list[Message] = []
        cur = self.leaf if leaf is None else leaf
        while cur is not None:
            msg = self.messages[cur]
            out.append(msg)
            cur = msg.parent_id
        out.reverse()
        return out

    def pending(self) -> list[tuple[dict[str, Any], bool]]:
        """Runs waiting to start, as ``(queue item, front)``, in the order they came.

        The queue last announced, then what was submitted since and not yet
        taken into it (``front``: to go before the queue). This is what a
        replica that takes a session over has to run.
        """
        out = [(q, False) for q in self.queue if q["run_id"] not in self.runs]
        listed = {q["run_id"] for q in self.queue}
        out += [v for run_id, v in self.submitted.items() if run_id not in listed]
        return out

    def tool_call(self, tool_call_id: str) -> Part | None:
        return self._tool_calls.get(tool_call_id)

    def answer_of(self, run_id: str) -> Message | None:
        """The message run ``run_id`` writes (its assistant message), if it started one."""
        for msg in reversed(self.messages.values()):
            if msg.run_id == run_id and msg.role != "user":
                return msg
        return None

    def answered(self, wait: dict[str, Any]) -> bool:
        """Whether a suspended run's wait (an item of ``run-suspend``'s list) has its answer."""
        if wait.get("for") == "request":
            req = self.client_requests.get(wait.get("request_id", ""))
            return req is not None and req["answered"]
        part = self._tool_calls.get(wait.get("tool_call_id", ""))
        if part is None:
            return False
        if wait.get("for") == "approval":
            return part.approval is not None
        return part.answered

    def resumable(self) -> bool:
        """The active run may go on now: it is not suspended, or an answer it waits for came."""
        active = self.active_run
        if active is None:
            return False
        waiting = active.get("suspended")
        return waiting is None or any(self.answered(w) for w in waiting)

    def message_json(self, msg: Message) -> dict[str, Any]:
        siblings = self.children.get(msg.parent_id, [])
        out: dict[str, Any] = {
            "id": msg.id,
            "role": msg.role,
            "parent_id": msg.parent_id,
            "status": msg.status,
            "parts": [p.to_json() for p in msg.parts],
            "siblings": list(siblings),
        }
        for key in ("run_id", "usage", "edit_of"):
            v = getattr(msg, key)
            if v is not None:
                out[key] = v
        return out

    def snapshot(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "messages": [self.message_json(m) for m in self.branch()],
            "active_run": self.active_run,
            "queue": self.queue,
            "last_error": self.last_error,
            "usage": dict(self.usage),
        }
        if self.client_requests:  # only in sessions that asked their clients something
            out["client_requests"] = [dict(r) for r in self.client_requests.values()]
        return out

    # -- checkpoints: the whole fold as plain JSON values, and back -------------

    def dump(self) -> dict[str, Any]:
        """Everything the fold holds, as JSON values: :meth:`load` of it folds on
        exactly as this fold does (a checkpoint; see sessions/checkpoints.py).

        Parts are listed once and named by their place in the list: a tool call
        a retry discarded is gone from its message but still answers its
        ``tool-result``, so parts are not only found through messages.
        """
        parts: list[Part] = []
        index: dict[int, int] = {}

        def ref(part: Part) -> int:
            at = index.get(id(part))
            if at is None:
                at = index[id(part)] = len(parts)
                parts.append(part)
            return at

        messages = [
            [m.id, m.role, m.parent_id, [ref(p) for p in m.parts], m.status, m.run_id, m.usage,
             m.edit_of, m.tools, m.last_part]
            for m in self.messages.values()
        ]  # fmt: skip
        tool_calls = [[call, ref(part)] for call, part in self._tool_calls.items()]
        return {
            "parts": [[getattr(p, name) for name in _PART_FIELDS] for p in parts],
            "messages": messages,
            "children": [[parent, ids] for parent, ids in self.children.items()],
            "leaf": self.leaf,
            "active_run": self.active_run,
            "queue": self.queue,
            "status": self.status,
            "last_error": self.last_error,
            "usage": self.usage,
            "runs": self.runs,
            "submitted": [[run, item, front] for run, (item, front) in self.submitted.items()],
            "cancels": list(self.cancels),
            "journals": self.journals,
            "tool_calls": tool_calls,
            "client_requests": self.client_requests,
            "seen": list(self._seen),
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> SessionFold:
        """The fold :meth:`dump` gave ``data`` of."""
        fold = cls()
        parts = [Part(*fields) for fields in data["parts"]]
        for mid, role, parent, refs, status, run_id, usage, edit_of, tools, last in data[
            "messages"
        ]:
            msg = Message(mid, role, parent, [parts[i] for i in refs], status, run_id, usage,
                          edit_of, tools, last)  # fmt: skip
            fold.messages[mid] = msg
            for part in msg.parts:
                fold._parts[part.id] = (msg, part)
        fold.children = {parent: ids for parent, ids in data["children"]}
        fold.leaf = data["leaf"]
        fold.active_run = data["active_run"]
        fold.queue = data["queue"]
        fold.status = data["status"]
        fold.last_error = data["last_error"]
        fold.usage = data["usage"]
        fold.runs = data["runs"]
        fold.submitted = {run: (item, front) for run, item, front in data["submitted"]}
        fold.cancels = set(data["cancels"])
        fold.journals = data["journals"]
        fold._tool_calls = {call: parts[i] for call, i in data["tool_calls"]}
        fold.client_requests = data["client_requests"]
        fold._seen = set(data["seen"])
        return fold


#: Part's fields in the order of its constructor (how :meth:`SessionFold.dump` lists them).
_PART_FIELDS = tuple(f.name for f in fields(Part))


def part_number(part_id: str) -> int:
    """``n`` of a part id ``{message id}:{n}`` (0 for an id of another shape)."""
    tail = part_id.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


_HANDLERS = {
    ev.USER_MESSAGE: SessionFold._user_message,
    ev.MESSAGE_START: SessionFold._message_start,
    ev.PART_START: SessionFold._part_start,
    ev.PART_DELTA: SessionFold._part_delta,
    ev.PART_END: SessionFold._part_end,
    ev.MESSAGE_END: SessionFold._message_end,
    ev.RUN_START: SessionFold._run_start,
    ev.RUN_END: SessionFold._run_end,
    ev.RETRY: SessionFold._retry,
    ev.JOURNAL: SessionFold._journal,
    ev.RUN_SUSPEND: SessionFold._run_suspend,
    ev.RUN_RESUME: SessionFold._run_resume,
    ev.ERROR: SessionFold._error,
    ev.TOOL_RESULT: SessionFold._tool_result,
    ev.TOOL_APPROVAL: SessionFold._tool_approval,
    ev.STATUS: SessionFold._status,
    ev.QUEUE_UPDATE: SessionFold._queue_update,
    ev.ACTIVE_BRANCH: SessionFold._active_branch,
    ev.SUBMIT: SessionFold._submit,
    ev.CANCEL: SessionFold._cancel,
    ev.CLIENT_REQUEST: SessionFold._client_request,
    ev.CLIENT_RESPONSE: SessionFold._client_response,
}
