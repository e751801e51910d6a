"""The keys' store side, on a real SQLite file: answers kept once, and the sweep of expired ones.

The sweep deletes only what has expired, and never an answer a request has
just kept again under the same key (it deletes under the key's claim).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tether.api import idempotency
from tether.api.idempotency import EXPIRY_INDEX, RECORDS, Idempotency, InProgress, KeyReused
from tether.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "tether.db")
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def counter() -> tuple[list[int], Any]:
    calls: list[int] = []

    async def act() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    return calls, act


async def test_an_answer_is_kept_once_per_caller_and_key(store: SqliteStore) -> None:
    keys = Idempotency(store, retention=60)
    calls, act = counter()
    first = await keys.once("key_a", "k", "print", act)
    again = await keys.once("key_a", "k", "print", act)
    theirs = await keys.once("key_b", "k", "print", act)
    assert (first.value, first.replayed) == ({"n": 1}, False)
    assert (again.value, again.replayed) == ({"n": 1}, True)
    assert (theirs.value, theirs.replayed) == ({"n": 2}, False)
    with pytest.raises(KeyReused):
        await keys.once("key_a", "k", "another print", act)
    assert len(calls) == 2


async def test_a_claimed_key_is_in_progress_and_a_failure_frees_it(store: SqliteStore) -> None:
    keys = Idempotency(store, retention=60)
    calls, act = counter()

    async def reenter() -> dict[str, int]:
        await keys.once(None, "k", "print", act)  # the same key, while this request holds it
        return {}

    with pytest.raises(InProgress):
        await keys.once(None, "k", "print", reenter)
    # The outer request failed (with InProgress): it kept nothing and let its claim go.
    assert calls == []
    assert (await keys.once(None, "k", "print", act)).value == {"n": 1}


async def test_the_sweep_deletes_expired_answers_only(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Idempotency(store, retention=10)
    _, act = counter()
    for key in ("old-1", "old-2"):
        await keys.once(None, key, "print", act)
    now = time.time()
    monkeypatch.setattr(idempotency.time, "time", lambda: now + 5)
    await keys.once(None, "young", "print", act)
    monkeypatch.setattr(idempotency.time, "time", lambda: now + 11)
    assert await keys.sweep() == 2
    assert len(await store.list_records(RECORDS)) == 1
    assert await store.index_count(EXPIRY_INDEX) == 1
    assert (await keys.once(None, "young", "print", act)).replayed
    monkeypatch.setattr(idempotency.time, "time", lambda: now + 16)
    assert await keys.sweep() == 1
    assert await store.list_records(RECORDS) == []
    assert await store.index_count(EXPIRY_INDEX) == 0


async def test_the_sweep_spares_a_key_used_again_after_it_expired(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Idempotency(store, retention=10)
    calls, act = counter()
    await keys.once(None, "k", "print", act)
    later = time.time() + 11
    monkeypatch.setattr(idempotency.time, "time", lambda: later)
    again = await keys.once(None, "k", "print", act)  # expired: done and kept anew
    assert (again.value, again.replayed) == ({"n": 2}, False)
    assert await keys.sweep() == 0
    assert (await keys.once(None, "k", "print", act)).value == {"n": 2}
    assert len(calls) == 2


async def test_the_sweeper_is_stopped_by_its_owner(store: SqliteStore) -> None:
    keys = Idempotency(store, retention=60)
    keys.start()
    task = keys._sweeper
    assert task is not None and not task.done()
    await keys.aclose()
    assert task.done() and keys._sweeper is None
