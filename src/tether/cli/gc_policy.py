"""The server's garbage-collector policy, applied once it has started.

A streaming server holds thousands of live objects per response in flight
(coroutine frames, closures, generators), and they live for the whole
response. With CPython's default thresholds (700, 10, 10) the middle
generation is collected every ~7,000 allocations, and every such collection
walks all of those objects again: pauses of 3 to 12 ms that every stream on
the event loop waits out (timed with ``gc.callbacks`` in a server under
``benchmarks/bench_gateway.py --arrivals steady``, 50 streams in flight). So:

- what exists once start-up is done (modules, the app, its routes) is frozen:
  no collection walks it again;
- the youngest generation keeps the default threshold, so cyclic garbage made
  per request is still freed promptly;
- the older generations are collected a hundred times less often. They only
  ever hold objects that outlived a young collection, mostly live responses,
  so memory grows by the cyclic garbage that waits longer, not by leaks.
"""

from __future__ import annotations

import gc

#: Young generation: CPython's default. Older ones: 100x rarer than the default.
THRESHOLDS = (700, 1000, 10)


def settle_heap() -> None:
    """Freeze what start-up made and raise the older generations' thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
