"""A session driver's state changes only as its transition table allows, in one place.

These tests need no store traffic: a driver is built over an idle memory store
and moved between states directly.
"""

from __future__ import annotations

import itertools

import pytest

from tether.runtime.driver import (
    TRANSITIONS,
    Drivers,
    DriverState,
    InvalidTransition,
    SessionDriver,
)
from tether.runtime.execution import Run
from tether.runtime.queue import QueueItem
from tether.sessions.service import SessionService
from tether.store.memory import MemoryStore

FREE, DRIVING, RUNNING, LOST = (
    DriverState.FREE,
    DriverState.DRIVING,
    DriverState.RUNNING,
    DriverState.LOST,
)

ALLOWED = {
    (FREE, DRIVING),  # took the lease
    (FREE, LOST),  # an append as driver refused after letting go
    (DRIVING, FREE),  # let the lease go
    (DRIVING, RUNNING),  # began a run
    (DRIVING, LOST),  # the lease lapsed
    (RUNNING, DRIVING),  # the run's end is written
    (RUNNING, LOST),  # the lease lapsed under the run
}


def driver_in(state: DriverState) -> SessionDriver:
    """A driver placed straight in ``state`` (the setup, not the thing under test)."""
    drivers = Drivers(SessionService(MemoryStore()), lambda record: _never)
    driver = drivers.get("ses_1")
    driver.state = state
    return driver


async def _never(ctx: object) -> None:
    raise AssertionError("no agent runs in these tests")


def a_run() -> Run:
    return Run(QueueItem("run_1", "message", "msg_1"))


def test_the_table_is_exactly_the_documented_transitions() -> None:
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(DriverState)


def test_a_new_driver_is_free() -> None:
    drivers = Drivers(SessionService(MemoryStore()), lambda record: _never)
    driver = drivers.get("ses_1")
    assert driver.state is FREE and driver.run is None and not driver.driving
    assert drivers.get("ses_1") is driver and drivers.find("ses_2") is None


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=str))
def test_allowed_transitions_change_the_state(old: DriverState, new: DriverState) -> None:
    driver = driver_in(old)
    driver._set_state(new)
    assert driver.state is new


REFUSED = sorted(set(itertools.product(DriverState, repeat=2)) - ALLOWED, key=str)


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_refused_transitions_raise_and_leave_the_state(old: DriverState, new: DriverState) -> None:
    driver = driver_in(old)
    with pytest.raises(InvalidTransition) as caught:
        driver._set_state(new)
    assert driver.state is old
    assert (caught.value.old, caught.value.new) == (old, new)


def test_only_lost_is_final() -> None:
    assert [s for s in DriverState if not TRANSITIONS[s]] == [LOST]


@pytest.mark.parametrize(
    ("state", "driving", "lost"),
    [(FREE, False, False), (DRIVING, True, False), (RUNNING, True, False), (LOST, False, True)],
)
def test_driving_means_holding_the_lease(state: DriverState, driving: bool, lost: bool) -> None:
    driver = driver_in(state)
    assert (driver.driving, driver.lost) == (driving, lost)


def test_a_run_is_held_from_its_start_until_it_finishes() -> None:
    driver = driver_in(DRIVING)
    run = a_run()
    driver.start_run(run)
    assert driver.state is RUNNING and driver.run is run
    driver.finish_run(a_run())  # not the active run: nothing changes
    assert driver.state is RUNNING and driver.run is run
    driver.finish_run(run)
    assert driver.state is DRIVING and driver.run is None


@pytest.mark.parametrize("state", [FREE, RUNNING, LOST])
def test_a_run_starts_only_on_a_driver_with_no_run(state: DriverState) -> None:
    driver = driver_in(state)
    before = driver.run
    with pytest.raises(InvalidTransition):
        driver.start_run(a_run())
    assert driver.state is state and driver.run is before


async def test_losing_the_lease_keeps_the_run_until_it_finishes_but_not_the_driving() -> None:
    driver = driver_in(DRIVING)
    run = a_run()
    driver.start_run(run)
    driver.queue.append(QueueItem("run_2", "message", "msg_2"))
    driver.lose()
    assert driver.state is LOST and not driver.queue
    assert driver.host.find("ses_1") is None  # the next request gets a new driver
    assert driver.run is run  # its task unwinds, then finishes it
    driver.lose()  # twice is once
    driver.finish_run(run)
    assert driver.state is LOST and driver.run is None
    await driver.host.settle()


async def test_a_lost_driver_never_takes_the_lease_again() -> None:
    driver = driver_in(LOST)
    assert not await driver.take()
    assert driver.state is LOST
