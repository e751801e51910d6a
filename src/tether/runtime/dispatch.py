"""Handing sessions of worker-served agents to tether workers instead of driving them here.

An agent named in ``TETHER_WORKER_AGENTS`` runs in ``tether worker`` processes,
not in the server. The server never drives its sessions: where it would take
a session's lease (a message was submitted, a cancel or an answer arrived, the
reaper found the driver gone), it appends ``{"session": id}`` to the agent's
*work stream* instead.

Each agent has an internal pull-wake subscription (Durable Streams, PROTOCOL.md
section 7) on its work stream, whose wakes go to the agent's *wake stream*.
Workers follow the wake stream; one claims the wake, takes the sessions of the
entries after the acked offset (up to its capacity), acks what it took and
lets the wake go, and the subscription wakes again if entries remain, for
another worker. A worker takes a session by taking its lease, and drives it
exactly as a replica does (tether.runtime.driver): when it dies its lease
lapses, the reaper dispatches the session again, and another worker continues
the run from its journal. An entry whose session another worker already
drives is simply acked.

An agent served by a webhook handler (``TETHER_WEBHOOK_AGENTS``, docs/workers.md,
Webhook mode) has a webhook subscription on its work stream instead: each wake
is POSTed, signed, to the handler, which drives the wake's sessions through
the worker API with the wake's callback token (tether.api.wake_tokens).

These streams live under ``~keys/``, a prefix no client can name (see
tether.api.access), so only the server and the worker API reach them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping
from functools import partial

import orjson

from tether.runtime.expiry import expired_wait
from tether.sessions.fold import SessionFold
from tether.sessions.service import SessionRecord, SessionState
from tether.store.base import AppendRequest, CreateRequest, Store
from tether.subscriptions.config import PULL_WAKE, WEBHOOK, SubscriptionConfig
from tether.subscriptions.service import ConfigConflict, NotFound, SubscriptionService
from tether.subscriptions.state import FAILED

#: What a session's snapshot says for ``status`` while a run of it waits for a worker.
WAITING = "waiting"
#: Presence records of running workers (key: worker instance), renewed by their hello.
WORKERS = "workers"
#: A worker silent for this many lease times is forgotten (its presence record deleted).
STALE_WORKER_LEASES = 100
_JSON = "application/json"


def work_stream(agent: str) -> str:
    """The stream of sessions of ``agent`` that need a worker to drive them."""
    return f"~keys/~work/{agent}"


def wake_stream(agent: str) -> str:
    """Where the subscription on ``agent``'s work stream writes its wakes."""
    return f"~keys/~wake/{agent}"


def subscription_key(agent: str) -> str:
    """The key of ``agent``'s workers' subscription (outside every key's namespace)."""
    return f"~keys/~workers/{agent}"


def parse_webhook_agents(text: str) -> dict[str, str]:
    """``name=https://host/path,...`` (``TETHER_WEBHOOK_AGENTS``): agent -> its handler's URL."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError("TETHER_WEBHOOK_AGENTS: expected name=https://host/path,...")
        out[name.strip()] = url.strip()
    return out


class WorkDispatch:
    """The server's side of dispatch: what :class:`~tether.runtime.driver.Drivers` calls
    instead of driving a session whose agent workers serve."""

    def __init__(
        self,
        store: Store,
        agents: Collection[str],
        lease_ttl: float,
        webhooks: Mapping[str, str] | None = None,
    ) -> None:
        """``webhooks``: agent -> URL, for the agents a webhook handler serves."""
        self.store = store
        self.webhooks = dict(webhooks or {})
        self.agents = frozenset(agents) | frozenset(self.webhooks)
        self.lease_ttl = lease_ttl
        #: The subscriptions service, once :meth:`open` set up the agents' subscriptions.
        self.subscriptions: SubscriptionService | None = None
        #: Session id -> (its stream's tail, when) at its last dispatch: the reaper
        #: looks every second, but a session is dispatched again only when its
        #: stream moved on or a lease's time passed.
        self._last: dict[str, tuple[int, float]] = {}

    async def open(self, subscriptions: SubscriptionService) -> None:
        """Make each agent's work and wake streams and its workers' subscription (idempotent)."""
        self.subscriptions = subscriptions
        for agent in sorted(self.agents):
            for name in (work_stream(agent), wake_stream(agent)):
                await self.store.create(name, CreateRequest(_JSON))
            config = SubscriptionConfig(
                type=PULL_WAKE, pattern=None, streams=(work_stream(agent),), webhook_url=None,
                wake_stream=wake_stream(agent), lease_ttl_ms=int(self.lease_ttl * 1000),
                description=f"tether workers of agent {agent}",
            )  # fmt: skip
            url = self.webhooks.get(agent)
            if url is not None:  # wakes POSTed to the agent's handler instead
                config = SubscriptionConfig(
                    type=WEBHOOK, pattern=None, streams=(work_stream(agent),), webhook_url=url,
                    wake_stream=None, lease_ttl_ms=int(self.lease_ttl * 1000),
                    description=f"webhook handler of agent {agent}",
                )  # fmt: skip
            key, sub_id = subscription_key(agent), f"workers-{agent}"
            # Internal: no key owns it, and it names store paths as they are.
            put = partial(
                subscriptions.put, key, sub_id, config, owner=None, prefix="", base_url=""
            )
            try:
                await put()
            except ConfigConflict:
                # Made with another lease time: made afresh, at the work stream's tail
                # (the reaper dispatches again what still needs a worker).
                await subscriptions.delete(key)
                await put()

    async def __call__(self, state: SessionState) -> bool:
        """Dispatch the session if its agent is worker-served and it has work for a
        worker (a run queued, or one to continue); whether its agent is worker-served."""
        record, fold, tail = state.record, state.fold, state.position
        if record.agent is None or record.agent not in self.agents:
            return False
        if not _has_work(fold):
            return True  # e.g. a submit about to be appended: dispatched once it is
        now = time.monotonic()
        last = self._last.get(record.id)
        if last is not None and last[0] == tail and now - last[1] < self.lease_ttl:
            return True
        self._last[record.id] = (tail, now)
        if len(self._last) > 10_000:
            self._last.pop(next(iter(self._last)))
        await self.append(record.agent, record.id)
        return True

    async def append(self, agent: str, session_id: str) -> None:
        entry = AppendRequest([orjson.dumps({"session": session_id})], _JSON)
        await self.store.append(work_stream(agent), entry)

    async def live_workers(self, agent: str) -> int:
        """Workers that said they serve ``agent`` within the last two lease times."""
        now = time.time()
        count = 0
        for instance, raw in await self.store.list_records(WORKERS):
            info = orjson.loads(raw)
            age = now - info.get("at", 0)
            if age > STALE_WORKER_LEASES * self.lease_ttl:
                await self.store.delete_record(WORKERS, instance)  # a worker long gone
            elif agent in info.get("agents", ()) and age < 2 * self.lease_ttl:
                count += 1
        return count

    async def waiting(self, record: SessionRecord, fold: SessionFold) -> bool:
        """A run of the session waits for a worker: its agent is worker-served, a run is
        queued (or was left open by a worker that died), and no worker serves the agent
        (for a webhook-served agent: its handler's deliveries fail)."""
        if record.agent is None or record.agent not in self.agents:
            return False
        if record.agent in self.webhooks:  # served while its handler takes the wakes
            return _has_work(fold) and await self._webhook_failing(record.agent)
        return _has_work(fold) and await self.live_workers(record.agent) == 0

    async def _webhook_failing(self, agent: str) -> bool:
        """The agent's handler did not take its last wake (the delivery is retried)."""
        if self.subscriptions is None:
            return False
        with contextlib.suppress(NotFound):
            sub = await self.subscriptions.get(subscription_key(agent))
            return sub.status == FAILED
        return False


def _has_work(fold: SessionFold) -> bool:
    """A worker has something to do in the session: a run queued, one left open that can
    go on (not one that waits on a person), or one whose wait expired (to end it)."""
    return (
        bool(fold.pending())
        or (fold.active_run is not None and fold.resumable())
        or expired_wait(fold) is not None
    )
