"""A run's journal: how a run continues after its process went away, doing no step twice.

Every step of a run that has an outcome is recorded in the session's log as it
completes, as a ``journal`` event: a model call's whole output (op
``model``), a tool call put in the answer for a client (``call``), the result
of a side effect the agent ran through ``ctx.step`` (``step``). Tool results
and approvals need no entry of their own: they are in the log already, under
their call's id.

A run that continues (after a restart, a failover, a shutdown, or an answer
to a suspended run) executes its agent again from the start, with its
journal: each journaled step the agent reaches returns what was recorded,
without being done again, and what the agent streams meanwhile is not written
again (the log has it). Once the last recorded step is reached, the run goes
on live. Hence the one rule for an agent: reach side effects through ``ctx``
and be deterministic between them. A replay that asks for a step the journal
does not hold, or for a model call with other messages than the recorded one,
fails the run with :class:`ReplayDiverged` rather than guess.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.sessions import events as ev
from tether.sessions.fold import SessionFold

Event = dict[str, Any]


class ReplayDiverged(RuntimeError):
    """On replay the agent asked for other steps than its journal recorded."""

    code = "replay_diverged"


RULE = "an agent must reach its side effects through ctx and be deterministic between them"


@dataclass(slots=True)
class Resumption:
    """Where a run that continues starts from, read from the session's fold."""

    #: The run's journal events, in log order.
    entries: list[Event] = field(default_factory=list)
    #: The highest part number its message ever had (new parts are numbered after it).
    last_part: int = 0
    #: Wait key (``result:{call}``, ``approval:{call}``) -> when it expires, as suspended.
    expiries: dict[str, float] = field(default_factory=dict)
    #: Tool results the log holds for calls of this run's message: call id -> (output, error).
    outcomes: dict[str, tuple[Any, str | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, fold: SessionFold, run_id: str) -> Resumption:
        entries = list(fold.journals.get(run_id, ()))
        msg = fold.answer_of(run_id)
        outcomes = {}
        if msg is not None:
            outcomes = {
                p.tool_call_id: (p.result, p.error)
                for p in msg.parts
                if p.tool_call_id and p.answered
            }
        active = fold.active_run or {}
        expiries = {
            f"{w.get('for')}:{w.get('request_id') or w.get('tool_call_id')}": w["expires_at"]
            for w in active.get("suspended", ())
            if w.get("expires_at") is not None
        }
        last_part = msg.last_part if msg is not None else 0
        return cls(entries, last_part, expiries, outcomes)

    @property
    def watermark(self) -> int:
        """Parts numbered up to this are complete steps' output; later ones a cut attempt's."""
        return self.entries[-1].get("parts", 0) if self.entries else 0


class Journal:
    """The replay side of one execution of a run: the steps still to be replayed."""

    __slots__ = ("_counts", "_recorded", "run_id")

    def __init__(self, run_id: str, entries: list[Event] = ()) -> None:  # type: ignore[assignment]
        self.run_id = run_id
        self._recorded: dict[str, Event] = {e["key"]: e for e in entries}
        self._counts: dict[str, int] = {}

    @property
    def replaying(self) -> bool:
        """Recorded steps remain: the agent re-executes what the log already holds."""
        return bool(self._recorded)

    def key(self, what: str) -> str:
        """The key of the next ``what`` (``model``, ``step:name``): ``what#n``, from 1."""
        n = self._counts.get(what, 0) + 1
        self._counts[what] = n
        return f"{what}#{n}"

    def take(self, key: str, fingerprint: str | None = None) -> Event | None:
        """The recorded entry under ``key`` (replaying), or None: the step is done live.

        ReplayDiverged when the journal still holds steps but not this one, or
        holds it for another request.
        """
        if not self._recorded:
            return None
        entry = self._recorded.pop(key, None)
        if entry is None:
            pending = next(iter(self._recorded))
            raise ReplayDiverged(
                f"run {self.run_id} cannot continue: on replay the agent asked for {key}, "
                f"which its journal does not hold (it holds {pending} next); {RULE}"
            )
        if fingerprint is not None and entry.get("fingerprint") != fingerprint:
            raise ReplayDiverged(
                f"run {self.run_id} cannot continue: on replay {key} was asked with other "
                f"messages than the recorded call; {RULE}"
            )
        return entry

    def finished(self) -> None:
        """The agent returned: ReplayDiverged if recorded steps were never reached."""
        if self._recorded:
            missed = next(iter(self._recorded))
            raise ReplayDiverged(
                f"run {self.run_id} cannot continue: the agent finished without reaching "
                f"{len(self._recorded)} recorded step(s), first {missed}; {RULE}"
            )

    def entry(
        self, op: str, key: str, value: Any, parts: int, fingerprint: str | None = None
    ) -> Event:
        """The ``journal`` event that records a step done live."""
        return ev.event(
            ev.JOURNAL, run_id=self.run_id, op=op, key=key, value=value, parts=parts,
            fingerprint=fingerprint,
        )  # fmt: skip


def fingerprint(*request: Any) -> str:
    """A short digest of a model request, to tell a replayed call from another."""
    return hashlib.sha256(orjson.dumps(request)).hexdigest()[:16]
