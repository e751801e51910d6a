"""Fold checkpoints through a real ``tether serve``, on a real SQLite file and a real Redis.

Sessions with tool calls, edits, regenerations, branches and cancels are
played with a checkpoint every few events; after a restart (an empty fold
cache) each snapshot must equal the fold of its whole log, the checkpoint
must be what it started from, and a checkpoint of another fold format must be
ignored and written again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from redis_server import running_redis
from sessions.scenarios import FOLD_KEYS, SCENARIOS, read_log, start_server
from tether.sessions import checkpoints
from tether.sessions.fold import SessionFold
from tether.sessions.service import stream_name
from tether.store.factory import open_store

EVERY = 4
#: Scenarios with tool calls, edits and branches, regenerations and a cancel.
PLAYED = ("tool-result", "approval", "edit", "regenerate", "branch", "cancel", "retries")
MARK = "from the checkpoint"


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
    else:
        (tmp_path / "redis-data").mkdir()
        with running_redis(tmp_path / "redis-data") as redis:
            yield redis.url()


def whole_fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    fold = SessionFold()
    fold.apply_all(events)
    snap = fold.snapshot()
    return {k: snap[k] for k in FOLD_KEYS if k in snap}


def fold_keys(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {k: snapshot[k] for k in FOLD_KEYS if k in snapshot}


@contextmanager
def serve(base: Path, spec: str) -> Iterator[httpx.Client]:
    """A client of a server on ``spec`` that checkpoints every ``EVERY`` events."""
    with (
        start_server(base, "--store", spec, "--fold-checkpoint-every", str(EVERY)) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        yield client


def with_store(base: Path, spec: str, job: Any) -> Any:
    """Run ``job(store)`` on the server's store, opened in this process (server stopped)."""

    async def main() -> Any:
        store = open_store(spec, base / "data")
        await store.open()
        try:
            return await job(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


async def stored(store: Any, session_id: str) -> checkpoints.Checkpoint | None:
    raw = await store.get_record(checkpoints.NAMESPACE, session_id)
    meta = await store.head(stream_name(session_id))
    return None if raw is None else checkpoints.decode(raw, meta)


def test_a_cold_snapshot_after_a_restart_is_the_fold_of_the_whole_log(
    tmp_path: Path, store_spec: str
) -> None:
    played = [s for s in SCENARIOS if s.__name__.strip("_").replace("_", "-") in PLAYED]
    assert len(played) == len(PLAYED)
    with serve(tmp_path, store_spec) as client:
        recordings = [scenario(client) for scenario in played]
        logs = {r.session_id: read_log(client, r.session_id) for r in recordings}
    for r in recordings:
        assert fold_keys(r.snapshot) == whole_fold(r.events)

    async def check(store: Any) -> None:
        for r in recordings:
            found = await stored(store, r.session_id)
            assert found is not None, f"{r.name}: no checkpoint"
            assert found.position >= len(logs[r.session_id]) - EVERY
            # Written only for a position the fold reached: it is the fold of the log up to it.
            log = logs[r.session_id]
            assert fold_keys(found.fold.snapshot()) == whole_fold(log[: found.position])

    with_store(tmp_path, store_spec, check)
    with serve(tmp_path, store_spec) as client:
        for r in recordings:
            cold = client.get(f"/v1/sessions/{r.session_id}").json()
            assert fold_keys(cold) == whole_fold(logs[r.session_id]), r.name


def mark(found: checkpoints.Checkpoint) -> None:
    """Change the checkpoint's fold so that a snapshot made from it shows it."""
    first = found.fold.branch()[0]
    first.parts[0].text = MARK


def test_a_cold_snapshot_starts_from_the_checkpoint_of_this_fold_format_only(
    tmp_path: Path, store_spec: str
) -> None:
    with serve(tmp_path, store_spec) as client:
        (edit,) = [s for s in SCENARIOS if s.__name__ == "_edit"]
        session_id = edit(client).session_id
        log = read_log(client, session_id)

    async def rewrite(store: Any, version: str) -> None:
        found = await stored(store, session_id)
        assert found is not None
        mark(found)
        meta = await store.head(stream_name(session_id))
        state = _Folded(found.fold, found.position, found.folded_bytes, checkpoints.identity(meta))
        raw = checkpoints.encode(state).replace(checkpoints.FORMAT.encode(), version.encode())
        await store.put_record(checkpoints.NAMESPACE, session_id, raw)

    # This format's checkpoint is what a cold snapshot starts from...
    with_store(tmp_path, store_spec, lambda store: rewrite(store, checkpoints.FORMAT))
    with serve(tmp_path, store_spec) as client:
        assert (
            client.get(f"/v1/sessions/{session_id}").json()["messages"][0]["parts"][0]["text"]
            == MARK
        )
    # ...another format's is ignored, and written again in this one.
    with_store(tmp_path, store_spec, lambda store: rewrite(store, "0ld-f0ld-f0rmat0"))
    with serve(tmp_path, store_spec) as client:
        cold = client.get(f"/v1/sessions/{session_id}").json()
        assert fold_keys(cold) == whole_fold(log)

    async def rewritten(store: Any) -> None:
        raw = await store.get_record(checkpoints.NAMESPACE, session_id)
        assert raw is not None and checkpoints.FORMAT.encode() in raw
        found = await stored(store, session_id)
        assert found is not None and fold_keys(found.fold.snapshot()) == whole_fold(
            log[: found.position]
        )

    with_store(tmp_path, store_spec, rewritten)


def test_a_deleted_session_leaves_no_checkpoint(tmp_path: Path, store_spec: str) -> None:
    with serve(tmp_path, store_spec) as client:
        (text,) = [s for s in SCENARIOS if s.__name__ == "_text"]
        kept, gone = text(client).session_id, text(client).session_id
        assert client.delete(f"/v1/sessions/{gone}").status_code == 204

    async def check(store: Any) -> None:
        assert await store.get_record(checkpoints.NAMESPACE, kept) is not None
        assert await store.get_record(checkpoints.NAMESPACE, gone) is None

    with_store(tmp_path, store_spec, check)


class _Folded:
    def __init__(
        self, fold: SessionFold, position: int, folded_bytes: int, stream: tuple[int, float]
    ) -> None:
        self.fold = fold
        self.position = position
        self.folded_bytes = folded_bytes
        self.stream = stream
