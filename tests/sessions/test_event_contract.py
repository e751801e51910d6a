"""The event contract: what a real server writes is what docs/events.md and the SDK say.

Every scenario of tests/sessions/scenarios.py (text, reasoning, tool results,
approvals, retries, an error, a cancel, an edit, a regenerate, a queue, and a
run lost to a crash) runs on a real ``tether serve``. Then every event of every session's whole log
must parse into a known SDK event class (``tether.client.events``) with no
field that class does not declare, and each log must follow the grammar.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from sessions.grammar import violations
from sessions.scenarios import (
    Event,
    Recording,
    read_log,
    record_all,
    record_continued_run,
    record_lost_run,
    start_server,
)
from tether.client.events import EVENT_TYPES, UnknownEvent, parse_event
from tether.sessions import events as ev


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Event]]:
    """Each scenario's session log, read whole once every scenario has run."""
    with start_server(tmp_path_factory.mktemp("contract")) as server:
        recordings: list[Recording] = record_all(server)
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            out = {r.name: read_log(client, r.session_id) for r in recordings}
    lost = record_lost_run(tmp_path_factory.mktemp("contract-lost"))
    continued = record_continued_run(tmp_path_factory.mktemp("contract-continued"))
    return {**out, lost.name: lost.events, continued.name: continued.events}


def sdk_fields(kind: str) -> set[str]:
    cls = EVENT_TYPES[kind]
    return {f.name for f in dataclasses.fields(cls)} - {"offset", "raw"}


def test_every_event_type_of_the_vocabulary_has_an_sdk_class() -> None:
    assert set(EVENT_TYPES) == ev.INPUTS | ev.OUTPUTS | ev.STATE


def test_every_event_parses_into_its_sdk_class_with_no_unknown_field(
    logs: dict[str, list[Event]],
) -> None:
    unknown: set[tuple[str, str]] = set()
    for events in logs.values():
        for e in events:
            parsed = parse_event(e)
            assert not isinstance(parsed, UnknownEvent), e
            assert type(parsed) is EVENT_TYPES[e["type"]]
            unknown |= {(e["type"], key) for key in set(e) - sdk_fields(e["type"])}
    assert not unknown, f"fields the SDK does not declare: {sorted(unknown)}"


def test_every_log_follows_the_grammar(logs: dict[str, list[Event]]) -> None:
    for name, events in logs.items():
        assert violations(events) == [], name


def test_the_runs_cover_the_vocabulary_a_single_server_writes(
    logs: dict[str, list[Event]],
) -> None:
    """So that a new event type or end reason is not silently left out of the contract."""
    seen = {e["type"] for events in logs.values() for e in events}
    # submit: only between replicas; regenerate: in the vocabulary, never written.
    assert seen == (ev.INPUTS | ev.OUTPUTS | ev.STATE) - {ev.SUBMIT, ev.REGENERATE}
    reasons = {e["reason"] for events in logs.values() for e in events if e["type"] == ev.RUN_END}
    assert reasons == ev.END_REASONS
    kinds = {e["kind"] for events in logs.values() for e in events if e["type"] == ev.PART_START}
    assert kinds == {ev.TEXT, ev.REASONING, ev.TOOL_CALL}


def test_the_recorded_fixtures_came_from_these_scenarios(logs: dict[str, list[Event]]) -> None:
    fixtures = Path(__file__).parents[1] / "fixtures" / "folds"
    assert {p.stem for p in fixtures.glob("*.json")} == set(logs)
