"""How runs outlive their process: the terms ``tether serve`` sets for every run."""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds a run waits on a person with its task alive before it is suspended.
SUSPEND_AFTER = 2.0
#: Seconds a shutdown lets running steps finish before it stops what is left.
SHUTDOWN_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class RunPolicy:
    #: A run whose every step waits on a person (a tool result, an approval) is
    #: suspended after this many seconds: its task stops, and the waits are
    #: recorded in the log until an answer continues it. Quick answers (a
    #: client that runs its tools at once) find the task still there.
    suspend_after: float = SUSPEND_AFTER
    #: Seconds a wait may last before its run ends as an error; None: no limit.
    wait_expiry: float | None = None
    #: On shutdown, seconds running steps (a model call, a tool) get to finish;
    #: what is left then stops and is continued by the next start.
    shutdown_grace: float = SHUTDOWN_GRACE
