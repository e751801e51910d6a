"""Glob patterns over stream paths: ``*`` one segment, ``**`` zero or more."""

from __future__ import annotations

import pytest

from tether.subscriptions.matcher import name_in
from tether.subscriptions.patterns import BadPattern, Glob


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("events/*", ["events/a", "events/b-1"], ["events", "events/a/b", "eventsx/a"]),
        ("events/**", ["events", "events/a", "events/a/b/c"], ["eventsx", "other/events/a"]),
        ("**", ["a", "a/b/c"], []),
        ("a/**/z", ["a/z", "a/b/z", "a/b/c/z"], ["a/zz", "a/b/zz", "z"]),
        ("run-*/log", ["run-1/log", "run-/log"], ["run/log", "run-1/x/log"]),
        ("a.b/*", ["a.b/x"], ["aXb/x"]),
        ("exact/path", ["exact/path"], ["exact/path/x", "exact"]),
    ],
)
def test_what_a_pattern_matches(pattern: str, matches: list[str], misses: list[str]) -> None:
    glob = Glob(pattern)
    for path in matches:
        assert glob.match(path), path
    for path in misses:
        assert not glob.match(path), path


def test_the_literal_prefix_bounds_the_backfill() -> None:
    assert Glob("events/*").prefix == "events/"
    assert Glob("a/b/**").prefix == "a/b/"
    assert Glob("**").prefix == ""
    assert Glob("exact/path").prefix == "exact/path"


@pytest.mark.parametrize("pattern", ["", "a//b", "a/", "a/**b", "***"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(BadPattern):
        Glob(pattern)


def test_a_namespace_sees_its_streams_and_sessions_only() -> None:
    assert name_in("~keys/a/", "~keys/a/events/x") == "events/x"
    assert name_in("~keys/a/", "~keys/b/events/x") is None
    assert name_in("~keys/a/", "sessions/s1") == "sessions/s1"
    assert name_in("", "~keys/a/events/x") is None
    assert name_in("", "events/x") == "events/x"
