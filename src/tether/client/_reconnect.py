"""When a live read reconnects, after how long, and when it gives up: one I/O-free policy.

Every live read of the SDK (a session's events, a stream's SSE tail and its
long-poll tail; async, and the sync twins generated from them) keeps one
:class:`Reconnect` and tells it what happened; it answers with how long to
wait before the next request, or that it is time to give up:

- a response that ends by itself is followed by the next one at once, unless
  it ended straight away having read nothing (a server that keeps closing
  connections must not be hammered): then after a backoff;
- a failed request (network error, 5xx) is tried again after an exponential
  backoff with jitter; anything read since the last failure resets it;
- failing for longer than ``give_up_after`` seconds, with no request
  answered in between, is giving up.

A read timeout is not a failure: the caller reconnects at once (it is how a
quiet connection is checked). Where to resume from is the caller's (the
follower's offset, or the end of a tail's last batch), and so is the
synthesized ``run-end`` of a run whose session disappeared (``Follower.gone``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tether.client._http import Backoff

#: A response that ends sooner than this having read nothing counts as refused.
QUICK_END = 1.0


class Reconnect:
    """The reconnect state of one live read (see the module docstring)."""

    def __init__(
        self,
        give_up_after: float,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.give_up_after = give_up_after
        self._backoff = backoff or Backoff()
        self._clock = clock
        #: When the current run of failures began (None: the last request was answered).
        self._failing_since: float | None = None
        self._started = 0.0
        self._progressed = False
        self._cut = False

    def start(self) -> None:
        """A request is about to be made."""
        self._started = self._clock()
        self._progressed = self._cut = False

    def connected(self) -> None:
        """The server answered the request: the failures so far are forgotten."""
        self._failing_since = None

    def progressed(self) -> None:
        """Something new was read: the next wait starts from the shortest."""
        self._progressed = True
        self._backoff.reset()

    def cut(self) -> None:
        """The caller ends the response itself, to reconnect at once (with a
        shorter read timeout, say)."""
        self._cut = True

    def delay_after_end(self) -> float:
        """The response ended (by itself, or :meth:`cut`): how long to wait
        before the next request."""
        if self._cut or self._progressed or self._clock() - self._started > QUICK_END:
            self._backoff.reset()
            return 0.0
        return self._backoff.next()

    def delay_after_failure(self) -> float | None:
        """The request failed: how long to wait before trying again, or None to give up."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self.give_up_after:
            return None
        return self._backoff.next()
