"""Choose a store backend from a command-line style URL, and say which one it is.

The command line refuses a store it cannot use before it starts serving (a
SQLite file in a directory that does not exist, a Redis nobody answers at), so
a mistyped ``--store`` is one clear line, never a traceback or a log somewhere
unexpected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tether.store.base import Store

#: ``PRAGMA synchronous`` of the SQLite store: ``normal`` survives the process
#: being killed, ``full`` also a power loss (an fsync per commit).
SqliteSync = Literal["normal", "full"]
SQLITE_SYNC: tuple[SqliteSync, ...] = ("normal", "full")
_SQLITE_URL = "sqlite:///"
_REDIS_SCHEMES = ("redis://", "rediss://")


class StoreUnusable(ValueError):
    """The store named cannot be used as named; the message says what to do."""


def sqlite_path(spec: str, data_dir: Path) -> Path | None:
    """The absolute path of the SQLite file ``spec`` names, or None for another backend.

    ``sqlite:///PATH`` is relative to the current directory (``sqlite:////abs``
    is absolute), as in SQLAlchemy's URLs.
    """
    if spec == "sqlite":
        return (data_dir / "tether.db").absolute()
    if spec.startswith(_SQLITE_URL):
        return Path(spec.removeprefix(_SQLITE_URL)).absolute()
    return None


def open_store(spec: str, data_dir: Path, sqlite_sync: SqliteSync = "normal") -> Store:
    """``sqlite`` (a file under ``data_dir``), ``memory``, ``sqlite:///path.db``, or
    ``redis://host:port/db`` (also ``rediss://``; ``?prefix=name:`` namespaces the keys).

    The data dir is created if missing; the directory of an explicit
    ``sqlite:///`` path must exist (StoreUnusable otherwise).
    """
    if spec == "memory":
        from tether.store.memory import MemoryStore

        return MemoryStore()
    path = sqlite_path(spec, data_dir)
    if path is not None:
        from tether.store.sqlite import SqliteStore

        if spec != "sqlite" and not path.parent.is_dir():
            raise StoreUnusable(
                f"store {spec}: the directory {path.parent} does not exist; create it, or "
                f"name another file (sqlite:///PATH is relative to the current directory, "
                f"sqlite:////PATH absolute)"
            )
        return SqliteStore(path, sqlite_sync.upper())
    if spec.startswith(_REDIS_SCHEMES):
        from tether.store.redis import RedisStore

        return RedisStore(spec)
    raise StoreUnusable(
        f"unknown store {spec!r}: use sqlite, memory, sqlite:///PATH or redis://HOST:PORT/DB"
    )


def describe_store(spec: str, data_dir: Path, sqlite_sync: SqliteSync = "normal") -> str:
    """The store as the start banner names it: the SQLite file's real path, Redis's
    URL without its password."""
    if spec == "memory":
        return "in memory"
    path = sqlite_path(spec, data_dir)
    if path is not None:
        return f"SQLite {path}, synchronous={sqlite_sync}"
    from tether.store.redis import redact

    return redact(spec)


def check_redis(spec: str, timeout: float = 3.0) -> None:
    """Raise StoreUnusable unless the Redis ``spec`` names answers a PING now."""
    import redis

    from tether.store.redis import redact, split_url

    url, _ = split_url(spec)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as err:
        raise StoreUnusable(f"store {redact(spec)}: {err}") from None
    try:
        client.ping()
    except redis.AuthenticationError:
        why = "it refused the credentials in the URL"
    except redis.TimeoutError:
        why = f"no answer within {timeout:g} s"
    except (redis.RedisError, OSError):
        why = "nothing answered there"
    else:
        return
    finally:
        client.close()
    raise StoreUnusable(
        f"cannot reach Redis at {redact(spec)} ({why}): start redis-server there or fix "
        "the URL, or use another store (--store, or TETHER_STORE; sqlite is the default)"
    )
