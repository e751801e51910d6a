"""The few primitives the async client and its generated sync twin spell differently.

``scripts/unasync.py`` writes the sync client from the async one by renaming
(``AsyncLock`` -> ``Lock``, ``asleep`` -> ``sleep``, ``aresolve`` -> ``resolve``);
each name here has its twin, so the generated code reads as if written by hand.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

#: Serialises a producer's appends (``async with``).
AsyncLock = asyncio.Lock
#: Serialises a producer's appends (``with``).
Lock = threading.Lock


async def asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def aresolve(value: Any) -> Any:
    """What a user callback returned, awaited if it is awaitable (async handlers)."""
    if inspect.isawaitable(value):
        return await value
    return value


def resolve(value: Any) -> Any:
    """What a user callback returned: the sync client calls sync handlers only."""
    return value
