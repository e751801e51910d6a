"""What a run's start, first token, suspension and end record: metrics and a log line.

The runtime calls these at those moments only (never per event), so a run
costs a dict entry from its start to its end. A run this process did not
start (one left open by a replica that died, or by the last start) is
*adopted* when this process goes on with it or ends it, so that its end is
counted under its model and timed from its start in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tether.observability import metrics
from tether.observability.logs import fields

log = logging.getLogger("tether.runs")

#: The label of runs without a key (auth off) in the token counts.
NO_KEY = "none"


@dataclass(slots=True)
class _Open:
    session_id: str
    model: str
    key: str
    #: When the run started (seconds since the epoch: a run may start in another process).
    started_at: float
    #: Its first token is still to come (and is timed: not for a run gone on mid-way).
    awaiting_token: bool


class RunLedger:
    """The runs open in this process, for their metrics and log lines."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._suspended: set[str] = set()
        metrics.RUNS_SUSPENDED.set_function(lambda: len(self._suspended))

    def started(self, run_id: str, session_id: str, model: str, key: str | None) -> None:
        """A run's opening events are in: counted, logged, timed from now."""
        self._open[run_id] = _Open(session_id, model, key or NO_KEY, time.time(), True)
        metrics.RUNS_STARTED.labels(model).inc()
        log.info(
            "run %s of session %s started (model %s)", run_id, session_id, model,
            extra=fields(event="run_start", session=session_id, run=run_id, model=model),
        )  # fmt: skip

    def adopted(
        self, run_id: str, session_id: str, model: str, key: str | None, started_at: float | None
    ) -> None:
        """A run started elsewhere goes on or ends here (not counted as started again)."""
        self._suspended.discard(run_id)
        if run_id not in self._open:
            at = started_at if started_at is not None else time.time()
            self._open[run_id] = _Open(session_id, model, key or NO_KEY, at, False)

    def first_token(self, run_id: str) -> None:
        """The run streamed its first text or reasoning."""
        run = self._open.get(run_id)
        if run is not None and run.awaiting_token:
            run.awaiting_token = False
            metrics.FIRST_TOKEN.labels(run.model).observe(time.time() - run.started_at)

    def suspended(self, run_id: str) -> None:
        """The run waits on a person, with no task here, until an answer continues it."""
        self._open.pop(run_id, None)
        self._suspended.add(run_id)

    def left(self, run_id: str) -> None:
        """The run's task is done here without an end (halted, or the lease lost)."""
        self._open.pop(run_id, None)

    def ended(
        self,
        run_id: str,
        session_id: str,
        reason: str,
        usage: Mapping[str, int] | None,
        model: str | None = None,
    ) -> None:
        """The run's run-end is in: counted by reason, its tokens added, timed, logged.

        ``model``: of a run that never started (a queued run cancelled).
        """
        self._suspended.discard(run_id)
        run = self._open.pop(run_id, None)
        model = run.model if run is not None else model or "unknown"
        metrics.RUNS_ENDED.labels(model, reason).inc()
        duration = None
        if run is not None:
            duration = time.time() - run.started_at
            metrics.RUN_DURATION.labels(model).observe(duration)
            for name, n in (usage or {}).items():
                if n:
                    kind = name.removesuffix("_tokens")
                    metrics.TOKENS.labels(model, run.key, kind).inc(n)
        log.info(
            "run %s of session %s ended: %s (model %s, %s)", run_id, session_id, reason, model,
            "?" if duration is None else f"{duration:.3f} s",
            extra=fields(
                event="run_end", session=session_id, run=run_id, model=model, reason=reason,
                duration=None if duration is None else round(duration, 6),
            ),
        )  # fmt: skip


#: This process's ledger (the runtime records into it).
LEDGER = RunLedger()
