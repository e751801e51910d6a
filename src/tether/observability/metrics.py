"""The server's Prometheus metrics: one registry, and every family tether records.

The layers record into these (runtime, store, providers, api); this module
imports none of them. What a hot path pays is bounded by design: runs are
counted at their start and end, readers at connect and disconnect, appends
once per commit (a group commit's appends in one call), upstream requests
once per request; nothing is recorded per event streamed. Gauges that
describe state held elsewhere (queued runs) are read when scraped, so
keeping them costs nothing in between.

Label values are bounded: models and upstreams are the server's own, keys
are their identities (``key_…``, never the key; ``none`` without keys), and
statuses are HTTP codes.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

#: No ``*_created`` series: a scraper gets a counter's start from its resets.
disable_created_metrics()

REGISTRY: Final = CollectorRegistry()
#: process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds...
ProcessCollector(registry=REGISTRY)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
#: Seconds: from a token's wait on a warm upstream (tens of ms) to a long run (minutes).
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Seconds a store commit takes: SQLite's are tens of microseconds to milliseconds.
_COMMIT = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)

RUNS_STARTED: Final = Counter(
    "tether_runs_started", "Runs started in this process.", ["model"], registry=REGISTRY
)
RUNS_ENDED: Final = Counter(
    "tether_runs_ended",
    "Runs ended in this process, by reason (complete, cancelled, failed, interrupted).",
    ["model", "reason"],
    registry=REGISTRY,
)
FIRST_TOKEN: Final = Histogram(
    "tether_run_first_token_seconds",
    "From a run's start to the first text or reasoning it streams.",
    ["model"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
RUN_DURATION: Final = Histogram(
    "tether_run_duration_seconds",
    "From a run's start to its end.",
    ["model"],
    buckets=_DURATION,
    registry=REGISTRY,
)
TOKENS: Final = Counter(
    "tether_tokens",
    "Tokens of ended runs' answers, by kind (input, output, cache_read, cache_write, "
    "reasoning), model and key identity.",
    ["model", "key", "kind"],
    registry=REGISTRY,
)
RUNS_ACTIVE: Final = Gauge(
    "tether_runs_active", "Runs executing in this process.", registry=REGISTRY
)
RUNS_QUEUED: Final = Gauge(
    "tether_runs_queued",
    "Runs waiting behind another in the sessions this process drives.",
    registry=REGISTRY,
)
RUNS_SUSPENDED: Final = Gauge(
    "tether_runs_suspended",
    "Runs this process suspended (waiting on a person) that have not gone on or ended here.",
    registry=REGISTRY,
)
READERS: Final = Gauge(
    "tether_readers",
    "Connected live readers, by transport (sse, websocket).",
    ["transport"],
    registry=REGISTRY,
)
READERS_CUT_OFF: Final = Counter(
    "tether_readers_cut_off_total",
    "Live readers disconnected because their send buffer was full, by transport.",
    ["transport"],
    registry=REGISTRY,
)
STORE_APPENDS: Final = Counter(
    "tether_store_appends", "Appends committed, by store.", ["store"], registry=REGISTRY
)
STORE_COMMIT: Final = Histogram(
    "tether_store_commit_seconds",
    "Time one commit takes (a group of appends on SQLite, one append on Redis), by store.",
    ["store"],
    buckets=_COMMIT,
    registry=REGISTRY,
)
UPSTREAM_REQUESTS: Final = Counter(
    "tether_upstream_requests",
    "Requests to model upstreams, by upstream and HTTP status (error: no response).",
    ["upstream", "status"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS: Final = Counter(
    "tether_upstream_errors",
    "Upstream requests that failed (status 400 and above, or no response).",
    ["upstream", "status"],
    registry=REGISTRY,
)
UPSTREAM_RETRIES: Final = Counter(
    "tether_upstream_retries",
    "Model calls tried again after a transient upstream error, by upstream and status.",
    ["upstream", "status"],
    registry=REGISTRY,
)
GATEWAY_SETUP: Final = Histogram(
    "tether_gateway_added_latency_seconds",
    "The gateway's set-up time: from a gateway request's arrival to its upstream "
    "request being written.",
    ["upstream"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
LEASE_TAKEOVERS: Final = Counter(
    "tether_lease_takeovers",
    "Sessions this process took over from a driver that was gone.",
    registry=REGISTRY,
)
LEASE_RENEW_FAILURES: Final = Counter(
    "tether_lease_renew_failures",
    "Lease renewals that failed: error (the store did not answer), lost (another "
    "process holds the lease).",
    ["reason"],
    registry=REGISTRY,
)
READY: Final = Gauge(
    "tether_ready", "1 if the last readiness check passed, else 0.", registry=REGISTRY
)
UPSTREAM_UP: Final = Gauge(
    "tether_upstream_up",
    "1 if the last request to the upstream was answered below 400, else 0.",
    ["upstream"],
    registry=REGISTRY,
)
ACP_AGENT_STATE: Final = Gauge(
    "tether_acp_agent_state",
    "1 for the state each ACP agent's supervisor is in (stopped, starting, ready, "
    "reconnecting, failed, closed), 0 for the others.",
    ["agent", "state"],
    registry=REGISTRY,
)
#: The states ACP_AGENT_STATE reports (tether.agents.acp.supervisor.AgentState).
ACP_STATES: Final = ("stopped", "starting", "ready", "reconnecting", "failed", "closed")
SUBSCRIPTION_WAKES: Final = Counter(
    "tether_subscription_wakes",
    "Wakes this process issued to Durable Streams subscriptions, by subscription type "
    "(pull-wake, webhook).",
    ["type"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES: Final = Counter(
    "tether_webhook_deliveries",
    "Webhook wakes this process sent, by outcome: done (the answer acked them), accepted "
    "(a callback is to follow), failed (retried later).",
    ["outcome"],
    registry=REGISTRY,
)
SUBSCRIPTIONS: Final = Gauge(
    "tether_subscriptions",
    "Subscriptions by status (active, failed: its last webhook delivery failed), as this "
    "process last loaded or changed them.",
    ["status"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """Every family, in the Prometheus text format."""
    return generate_latest(REGISTRY)


# -- runs' sources -------------------------------------------------------------


class RunCounts(Protocol):
    """What holds runs in memory: read when scraped, never kept up to date."""

    def active_runs(self) -> int: ...

    def queued_runs(self) -> int: ...


_run_sources: weakref.WeakSet[RunCounts] = weakref.WeakSet()
RUNS_ACTIVE.set_function(lambda: sum(s.active_runs() for s in list(_run_sources)))
RUNS_QUEUED.set_function(lambda: sum(s.queued_runs() for s in list(_run_sources)))


def watch_runs(source: RunCounts) -> None:
    """Count ``source``'s runs in the gauges while it lives."""
    _run_sources.add(source)


class SubscriptionCounts(Protocol):
    """What knows its subscriptions' statuses: read when scraped."""

    def subscriptions_by_status(self) -> dict[str, int]: ...


_subscription_sources: weakref.WeakSet[SubscriptionCounts] = weakref.WeakSet()


def watch_subscriptions(source: SubscriptionCounts, statuses: Iterable[str]) -> None:
    """Count ``source``'s subscriptions by status in the gauge while it lives."""
    _subscription_sources.add(source)
    for status in statuses:
        SUBSCRIPTIONS.labels(status).set_function(partial(_subscriptions_in, status))


def _subscriptions_in(status: str) -> int:
    return sum(s.subscriptions_by_status().get(status, 0) for s in list(_subscription_sources))


# -- the store -----------------------------------------------------------------


class StoreMeters:
    """One store's counters, bound to its label once (no label lookup per commit)."""

    __slots__ = ("_appends", "_commit")

    def __init__(self, store: str) -> None:
        self._appends = STORE_APPENDS.labels(store)
        self._commit = STORE_COMMIT.labels(store)

    def committed(self, appends: int, seconds: float) -> None:
        """One commit that held ``appends`` appends (0: record writes only) took ``seconds``."""
        if appends:
            self._appends.inc(appends)
        self._commit.observe(seconds)


# -- upstreams -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """What the last request to an upstream got: ok, or an error with its status."""

    ok: bool
    #: The HTTP status; None when no response came (connection refused, timeout).
    status: int | None
    #: When (seconds since the epoch).
    at: float

    def public(self) -> dict[str, object]:
        return {"state": "ok" if self.ok else "error", "status": self.status, "at": self.at}


#: Upstream name -> its last known state (set by every request to it).
UPSTREAMS: dict[str, UpstreamState] = {}
#: The server's upstreams, so that a retry's upstream label is one of them.
_configured: set[str] = set()


def acp_agent_state(agent: str, state: str) -> None:
    """ACP agent ``agent``'s supervisor is now in ``state``."""
    for each in ACP_STATES:
        ACP_AGENT_STATE.labels(agent, each).set(1 if each == state else 0)


def upstreams_configured(names: Iterable[str]) -> None:
    _configured.update(names)


def upstream_answered(upstream: str, status: int | None) -> None:
    """An upstream request got ``status`` (None: no response at all)."""
    label = "error" if status is None else str(status)
    UPSTREAM_REQUESTS.labels(upstream, label).inc()
    ok = status is not None and status < 400
    if not ok:
        UPSTREAM_ERRORS.labels(upstream, label).inc()
    UPSTREAMS[upstream] = UpstreamState(ok, status, time.time())
    UPSTREAM_UP.labels(upstream).set(1 if ok else 0)


_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def upstream_retried(error: str) -> None:
    """A model call is tried again after ``error`` (a provider error's message).

    Provider errors name their upstream first (``name: …``) and, for an HTTP
    answer, its status (``HTTP 503``); the message is all a retry is told.
    """
    name = error.partition(":")[0]
    status = _HTTP_STATUS.search(error)
    UPSTREAM_RETRIES.labels(
        name if name in _configured else "other", status.group(1) if status else "none"
    ).inc()


# -- the gateway's set-up time ---------------------------------------------------


class _Arrival:
    __slots__ = ("at", "pending")

    def __init__(self) -> None:
        self.at = time.perf_counter()
        self.pending = True


_arrival: ContextVar[_Arrival | None] = ContextVar("tether_gateway_arrival", default=None)


def gateway_request_arrived() -> None:
    """A gateway request arrived: its run's first upstream request measures from now.

    A context variable carries it to the upstream call, which runs in tasks
    the request starts (they copy the request's context).
    """
    _arrival.set(_Arrival())


def upstream_request_written(upstream: str) -> None:
    """An upstream request was written: if it is a gateway request's first, observe the wait."""
    arrival = _arrival.get()
    if arrival is not None and arrival.pending:
        arrival.pending = False
        GATEWAY_SETUP.labels(upstream).observe(time.perf_counter() - arrival.at)


# -- readers -----------------------------------------------------------------------

SSE_READERS: Final = READERS.labels("sse")
WEBSOCKET_READERS: Final = READERS.labels("websocket")
