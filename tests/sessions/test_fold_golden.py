"""The server fold reproduces the golden fixtures: real logs in, the server's snapshot out.

tests/fixtures/folds/*.json were recorded from real runs by
tests/fixtures/record_folds.py; the web UI's fold is held to the same files
by tests/web/fold_golden.mjs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sessions.grammar import violations
from tether.sessions.fold import SessionFold

FOLDS = Path(__file__).parents[1] / "fixtures" / "folds"
#: Cases written by hand (what no scenario records yet); record_folds.py leaves them be.
BY_HAND = FOLDS.with_name("folds-by-hand")
FIXTURES = sorted(FOLDS.glob("*.json")) + sorted(BY_HAND.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def folded(events: list[dict[str, Any]]) -> dict[str, Any]:
    fold = SessionFold()
    fold.apply_all(events)
    return fold.snapshot()


def test_there_are_fixtures() -> None:
    assert len(FIXTURES) >= 10


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_fixture_follows_the_grammar(path: Path) -> None:
    """A fixture recorded mid-run (its snapshot has an active run) is a log cut short."""
    fixture = load(path)
    finished = fixture["snapshot"]["active_run"] is None
    assert violations(fixture["events"], finished=finished) == []


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_the_fold_of_the_events_is_the_recorded_snapshot(path: Path) -> None:
    fixture = load(path)
    assert folded(fixture["events"]) == fixture["snapshot"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_events_replayed_from_any_point_change_nothing(path: Path) -> None:
    """A reader resuming from an earlier offset sees events twice: the fold ignores them."""
    events = load(path)["events"]
    fold = SessionFold()
    for cut in range(0, len(events), 3):
        fold.apply_all(events[: cut + 3])
    assert fold.snapshot() == load(path)["snapshot"]
