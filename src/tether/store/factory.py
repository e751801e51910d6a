"""Choose a store backend from a command-line style URL."""

from __future__ import annotations

from pathlib import Path

from tether.store.base import Store


def open_store(spec: str, data_dir: Path) -> Store:
    """``sqlite`` (a file under ``data_dir``), ``memory``, ``sqlite:///path.db``, or
    ``redis://host:port/db`` (also ``rediss://``; ``?prefix=name:`` namespaces the keys)."""
    if spec == "memory":
        from tether.store.memory import MemoryStore

        return MemoryStore()
    if spec == "sqlite":
        from tether.store.sqlite import SqliteStore

        return SqliteStore(data_dir / "tether.db")
    if spec.startswith("sqlite:///"):
        from tether.store.sqlite import SqliteStore

        return SqliteStore(Path(spec.removeprefix("sqlite:///")))
    if spec.startswith(("redis://", "rediss://")):
        from tether.store.redis import RedisStore

        return RedisStore(spec)
    raise ValueError(
        f"unknown store {spec!r}: use sqlite, memory, sqlite:///PATH or redis://HOST:PORT/DB"
    )
