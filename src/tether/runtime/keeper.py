"""Keeping this process's leases, taking over sessions whose driver is gone, expiring waits.

On a shared store (Redis) two background tasks run: one renews the lease of
every session this process drives, every third of the lease time (a lease it
cannot renew in time counts as lost: another replica may take it over); the
other, the *reaper*, looks at the ``runs`` records (one per queued or running
run) for sessions nobody drives, takes their lease, continues the run left
open from its journal and carries on with the queue. On a store this process
owns alone the reaper runs once, at start, for the runs a dead process left
open. On every store a third task ends suspended runs whose wait expired.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from tether.observability import metrics
from tether.runtime.driver import Drivers
from tether.runtime.expiry import end_expired, expired_wait
from tether.runtime.names import EXPIRING, RUNS, lease_name
from tether.runtime.tasks import cancel_and_wait
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionNotFound

log = logging.getLogger(__name__)

#: Seconds between two looks for sessions whose driver is gone.
REAP_INTERVAL = 1.0
#: A ``runs`` record whose run the stream never heard of (its replica died
#: between the two writes) is dropped after this many seconds.
ORPHAN_RECORD_AGE = 60.0


class LeaseKeeper:
    """Renews the leases of the sessions ``drivers`` drive, and reaps the others."""

    def __init__(
        self, drivers: Drivers, reap_interval: float = REAP_INTERVAL, *, reap: bool = True
    ) -> None:
        self.drivers = drivers
        self.reap_interval = reap_interval
        #: False in a tether worker: it only keeps its leases; the server reaps,
        #: expires waits, and dispatches what it finds to the workers.
        self.reaps = reap
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Take over what dead processes left (runs open, queues), then keep leases."""
        if not self.reaps:
            self._background = [asyncio.create_task(self._renew_forever(), name="tether-renewer")]
            return
        await self.reap()
        self._background = [asyncio.create_task(self._expire_forever(), name="tether-expiry")]
        if self.drivers.shared:
            self._background.append(
                asyncio.create_task(self._renew_forever(), name="tether-lease-renewer")
            )
        if self.drivers.shared or self.drivers.dispatch is not None:
            # Workers' leases lapse on any store: their sessions are dispatched again.
            self._background.append(asyncio.create_task(self._reap_forever(), name="tether-reaper"))

    async def aclose(self) -> None:
        await cancel_and_wait(self._background)
        self._background = []

    async def _renew_forever(self) -> None:
        drivers = self.drivers
        interval = drivers.lease_ttl / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            driving = {lease_name(d.session_id): d.session_id for d in drivers if d.driving}
            asked = time.monotonic()
            try:
                lost = await drivers.store.renew_leases(
                    list(driving), drivers.worker, drivers.lease_ttl
                )
                renewed = asked
            except Exception as err:
                metrics.LEASE_RENEW_FAILURES.labels("error").inc()
                if asked - renewed < drivers.lease_ttl * 0.8:
                    log.warning("could not renew leases (%s); will retry", err)
                    continue
                # They may lapse at any moment now, and another replica take over.
                lost = list(driving)
            if lost:
                metrics.LEASE_RENEW_FAILURES.labels("lost").inc(len(lost))
            for name in lost:
                driver = drivers.find(driving[name])
                if driver is not None:
                    driver.lose()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.reap()
            except Exception as err:
                log.warning("could not look for orphaned runs: %s", err)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.expire()
            except Exception as err:
                log.warning("could not look for expired waits: %s", err)

    async def expire(self) -> None:
        """End suspended runs whose wait expired (an ``error`` with code ``wait_expired``)."""
        drivers = self.drivers
        now = time.time()
        for key, member in await drivers.store.index_page(EXPIRING, None, 100):
            if float(key) > now or drivers.closing:
                return
            session_id, _, run_id = member.partition(" ")
            try:
                driver = await drivers.drive(session_id)
            except SessionNotFound:
                await drivers.store.index_remove(EXPIRING, member)
                continue
            if driver is None:
                # Another replica drives it, or a worker (dispatched it, its driver ends the
                # run): looked at again until the run no longer waits.
                fold = (await drivers.sessions.state(session_id)).fold
                if (fold.active_run or {}).get("run_id") != run_id:
                    await drivers.store.index_remove(EXPIRING, member)
                continue
            fold = await driver.fold()
            wait = expired_wait(fold, run_id)
            if wait is not None:
                await end_expired(driver, fold, wait)
            await drivers.store.index_remove(EXPIRING, member)
            await drivers.next(session_id)

    async def reap(self) -> None:
        """Take over sessions with runs (queued or running) whose driver is gone."""
        drivers = self.drivers
        by_session: dict[str, list[tuple[str, float]]] = {}
        for run_id, raw in await drivers.store.list_records(RUNS):
            info = orjson.loads(raw)
            by_session.setdefault(info["session_id"], []).append((run_id, info.get("at", 0.0)))
        for session_id, runs in by_session.items():
            driver = drivers.find(session_id)
            if drivers.closing or (driver is not None and driver.driving):
                continue
            if await drivers.store.lease_holder(lease_name(session_id)) is not None:
                continue
            if await self._waits_on_a_person(session_id):
                continue  # its queue waits behind a suspended run; an answer wakes it
            fold: SessionFold | None
            try:
                if await drivers.drive(session_id) is not None:
                    metrics.LEASE_TAKEOVERS.inc()
                    await drivers.next(session_id)
                fold = (await drivers.sessions.state(session_id)).fold
            except SessionNotFound:
                fold = None
            except Exception:
                log.exception("could not take over session %s", session_id)
                continue
            for run_id, at in runs:
                if _finished(fold, run_id, at):
                    await drivers.store.delete_record(RUNS, run_id)

    async def _waits_on_a_person(self, session_id: str) -> bool:
        try:
            fold = (await self.drivers.sessions.state(session_id)).fold
        except Exception:
            return False
        return fold.active_run is not None and not fold.resumable()


def _finished(fold: SessionFold | None, run_id: str, recorded_at: float) -> bool:
    """A ``runs`` record that no longer stands for work: its run ended, or never began."""
    if fold is None:
        return True  # the session is gone
    state = fold.runs.get(run_id)
    if state is not None:
        return state != "running"
    known = run_id in fold.submitted or any(q["run_id"] == run_id for q in fold.queue)
    return not known and time.time() - recorded_at > ORPHAN_RECORD_AGE
