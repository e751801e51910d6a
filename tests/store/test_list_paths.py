"""Listing stream paths under a prefix, a page at a time, on every backend (the eager
backfill of subscriptions), and the on_append hook every backend calls."""

from __future__ import annotations

import pytest

from tether.store.base import AppendRequest, CreateRequest, Store

JSON = "application/json"


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


async def _all(store: Store, prefix: str, page: int) -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        paths, cursor = await store.list_paths(prefix, cursor, page)
        out += paths
        if cursor is None:
            return out


async def test_paths_under_a_prefix_come_a_page_at_a_time(store: Store) -> None:
    """Every live path under the prefix once, none outside it (a glob character in the
    prefix is a plain character), none deleted."""
    inside = [f"ev*[x]/{i:03d}" for i in range(25)]
    for path in [*inside, "ev*[x]", "evx/1", "other/1", "ev*[x]/gone"]:
        await store.create(path, CreateRequest(JSON))
    await store.delete("ev*[x]/gone")
    for page in (1, 7, 100):
        listed = await _all(store, "ev*[x]/", page)
        assert sorted(listed) == inside
        assert len(listed) == len(set(listed))
    assert await _all(store, "nothing/", 10) == []


async def test_the_on_append_hook_is_told_of_creates_and_appends(store: Store) -> None:
    told: list[tuple[str, int]] = []
    store.on_append = lambda path, tail: told.append((path, tail))
    await store.create("a", CreateRequest(JSON, messages=[b"1", b"2"]))
    await store.create("a", CreateRequest(JSON))  # exists: nothing new
    await store.append("a", AppendRequest([b"3"], JSON))
    assert told == [("a", 2), ("a", 3)]
