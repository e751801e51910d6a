"""The reconnect policy every live read of the SDK follows, without a server or a clock."""

from __future__ import annotations

from tether.client._http import Backoff
from tether.client._reconnect import QUICK_END, Reconnect


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Doubling(Backoff):
    """Backoff without jitter, so delays can be compared."""

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return delay


def policy(give_up_after: float = 10.0) -> tuple[Reconnect, Clock]:
    clock = Clock()
    return Reconnect(give_up_after, backoff=Doubling(base=1.0, cap=8.0), clock=clock), clock


def test_a_response_that_lasted_or_read_something_is_followed_at_once() -> None:
    p, clock = policy()
    p.start()
    clock.now += QUICK_END + 0.1
    assert p.delay_after_end() == 0.0
    p.start()
    p.progressed()
    assert p.delay_after_end() == 0.0


def test_responses_that_end_at_once_with_nothing_back_off() -> None:
    p, clock = policy()
    delays = []
    for _ in range(5):
        p.start()
        clock.now += 0.01
        delays.append(p.delay_after_end())
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    p.start()
    clock.now += QUICK_END + 0.1
    assert p.delay_after_end() == 0.0  # reset: the next quick end starts from the shortest
    p.start()
    assert p.delay_after_end() == 1.0


def test_a_cut_by_the_caller_reconnects_at_once() -> None:
    p, _ = policy()
    p.start()
    p.cut()
    assert p.delay_after_end() == 0.0
    p.start()  # a new request forgets the cut
    assert p.delay_after_end() == 1.0


def test_failures_back_off_and_progress_resets_the_backoff() -> None:
    p, _ = policy()
    p.start()
    assert [p.delay_after_failure() for _ in range(3)] == [1.0, 2.0, 4.0]
    p.start()
    p.connected()
    p.progressed()
    assert p.delay_after_failure() == 1.0


def test_giving_up_after_failing_for_longer_than_the_limit() -> None:
    p, clock = policy(give_up_after=10.0)
    p.start()
    assert p.delay_after_failure() is not None  # the first failure starts the clock
    clock.now += 10.0
    assert p.delay_after_failure() is not None  # not longer than the limit yet
    clock.now += 0.1
    assert p.delay_after_failure() is None


def test_an_answered_request_forgets_the_failures_before_it() -> None:
    p, clock = policy(give_up_after=10.0)
    p.start()
    p.delay_after_failure()
    clock.now += 9.0
    p.start()
    p.connected()
    clock.now += 9.0
    assert p.delay_after_failure() is not None  # a new run of failures
    clock.now += 9.0
    assert p.delay_after_failure() is not None
    clock.now += 2.0
    assert p.delay_after_failure() is None
