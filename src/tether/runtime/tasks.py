"""Cancelling tasks so that they stay cancelled, and waiting for them."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait for them to finish.

    Not ``suppress(CancelledError): await task``: that would also swallow a
    cancel of the task waiting here, which then runs on as if never told.
    """
    pending = set(tasks)
    while pending:
        # Again if need be: a cancel that lands while a task is inside some
        # library's own cancel handling can be lost, and the task runs on.
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())
