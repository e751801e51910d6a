"""Where the runtime keeps its own state in the store: run records and session leases."""

from __future__ import annotations

#: The store's records of runs queued or running, one per run, so that the
#: reaper of any replica finds the sessions whose driver died.
RUNS = "runs"


def lease_name(session_id: str) -> str:
    """The lease whose holder drives the session."""
    return f"session:{session_id}"
