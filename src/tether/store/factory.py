"""Choose a store backend from a command-line style URL."""

from __future__ import annotations

from pathlib import Path

from tether.store.base import Store


def open_store(spec: str, data_dir: Path) -> Store:
    """``sqlite`` (a file under ``data_dir``), ``memory``, or ``sqlite:///path.db``."""
    if spec == "memory":
        from tether.store.memory import MemoryStore

        return MemoryStore()
    if spec == "sqlite":
        from tether.store.sqlite import SqliteStore

        return SqliteStore(data_dir / "tether.db")
    if spec.startswith("sqlite:///"):
        from tether.store.sqlite import SqliteStore

        return SqliteStore(Path(spec.removeprefix("sqlite:///")))
    raise ValueError(f"unknown store {spec!r}: use sqlite, memory or sqlite:///PATH")
