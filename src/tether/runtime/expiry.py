"""Ending a suspended run whose wait expired, wherever its session is driven.

The server's keeper finds expired waits in the ``expiring-waits`` index and
ends those runs itself, or, for a worker-served agent, dispatches the session
to a worker, whose driver ends the run when it takes the session (it cannot
read that index). Both end it the same way: an ``error`` with code
``wait_expired``, then the run's end.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from tether.observability.runs import LEDGER
from tether.runtime.execution import end
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold

if TYPE_CHECKING:
    from tether.runtime.driver import SessionDriver

log = logging.getLogger(__name__)


def expired_wait(fold: SessionFold, run_id: str | None = None) -> dict[str, Any] | None:
    """The first unanswered wait past its expiry of the session's suspended run (of
    ``run_id``, when named), or None."""
    active = fold.active_run or {}
    if run_id is not None and active.get("run_id") != run_id:
        return None
    now = time.time()
    for wait in active.get("suspended") or ():
        if wait.get("expires_at", now + 1) <= now and not fold.answered(wait):
            return dict(wait)
    return None


async def end_expired(driver: SessionDriver, fold: SessionFold, wait: dict[str, Any]) -> None:
    """End the session's suspended run, whose ``wait`` expired (its driver ends it)."""
    active = fold.active_run or {}
    run_id = str(active.get("run_id"))
    what = "an approval" if wait.get("for") == "approval" else "a result"
    message = (
        f"tool call {wait.get('tool_call_id')} waited for {what} past its expiry; the run ends"
    )
    if wait.get("for") == "request":
        message = (
            f"client request {wait.get('request_id')} waited for an answer past its expiry; "
            "the run ends"
        )
    log.info("run %s of session %s: %s", run_id, driver.session_id, message)
    LEDGER.adopted(run_id, driver.session_id, active.get("model") or "unknown", None,
                   active.get("started_at"))  # fmt: skip
    error = ev.event(ev.ERROR, run_id=run_id, code="wait_expired", message=message)
    await end(driver, run_id, ev.FAILED, first=[error])
