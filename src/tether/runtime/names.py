"""Where the runtime keeps its own state in the store: run records and session leases."""

from __future__ import annotations

#: The store's records of runs queued or running, one per run, so that the
#: reaper of any replica finds the sessions whose driver died.
RUNS = "runs"


def lease_name(session_id: str) -> str:
    """The lease whose holder drives the session."""
    return f"session:{session_id}"


#: The index of suspended runs' waits that expire, by when (member: ``{session} {run}``).
EXPIRING = "expiring-waits"


#: Seconds an answer's claim lasts if its replica dies before it lets it go.
CLAIM_TTL = 30.0


def claim_name(session_id: str, wait_key: str) -> str:
    """The lease taken while an answer (``result:{call}``, ``approval:{call}``) is written:
    of two answers to one question, the one that takes it is the one written."""
    return f"answer:{session_id}:{wait_key}"
