"""Indexes: members in the order of their keys, read a page at a time, on every backend.

Sessions are listed by owner through them, so a listing costs one page, not
every record of every key.
"""

from __future__ import annotations

import random

import pytest

from tether.store.base import Store


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


async def _all(store: Store, name: str, page: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    after = None
    while batch := await store.index_page(name, after, page):
        out += batch
        after = batch[-1][0]
    return out


async def test_members_come_back_in_key_order_a_page_at_a_time(store: Store) -> None:
    for member, key in [("c", "3:c"), ("a", "1:a"), ("b", "2:b"), ("d", "4:d")]:
        await store.index_put("ix", member, key)
    await store.index_put("other", "z", "0:z")
    assert await store.index_page("ix", None, 2) == [("1:a", "a"), ("2:b", "b")]
    assert await store.index_page("ix", "2:b", 2) == [("3:c", "c"), ("4:d", "d")]
    assert await store.index_page("ix", "4:d", 2) == []
    assert await store.index_count("ix") == 4
    assert await store.index_count("nothing") == 0


async def test_putting_a_member_again_moves_it_and_removing_it_forgets_it(store: Store) -> None:
    await store.index_put("ix", "a", "1:a")
    await store.index_put("ix", "b", "2:b")
    await store.index_put("ix", "a", "3:a")
    assert await store.index_page("ix", None, 10) == [("2:b", "b"), ("3:a", "a")]
    await store.index_remove("ix", "b")
    await store.index_remove("ix", "never-there")
    assert await store.index_page("ix", None, 10) == [("3:a", "a")]
    assert await store.index_count("ix") == 1


async def test_an_index_agrees_with_a_sorted_reference_under_random_writes(store: Store) -> None:
    rng = random.Random(16)
    reference: dict[str, str] = {}
    for _ in range(300):
        member = f"m{rng.randrange(40)}"
        if rng.random() < 0.25:
            reference.pop(member, None)
            await store.index_remove("ix", member)
        else:
            key = f"{rng.randrange(1000):04d}:{member}"
            reference[member] = key
            await store.index_put("ix", member, key)
    expected = sorted((k, m) for m, k in reference.items())
    assert await _all(store, "ix", 7) == expected
    assert await store.index_count("ix") == len(expected)
