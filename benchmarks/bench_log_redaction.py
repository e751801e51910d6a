"""What log redaction costs per record, as ``tether serve`` logs.

Each record goes through a logger to a handler that formats it (uvicorn's
access formatter for access lines, the serve format for the others) and
writes it to an in-memory stream. The same records are logged without
redaction and with it, for several numbers of known secrets (random keys
of 46 characters, each with its percent-encoded and base64 forms):

    .venv/bin/python benchmarks/bench_log_redaction.py [--records N] [--repeats R]

The configurations take turns, repeat after repeat, and the time is the
process's CPU time (other processes on the machine do not count). Printed:
the median time per record, and what redaction adds to it.
"""

from __future__ import annotations

import argparse
import io
import logging
import secrets
import statistics
import time

from uvicorn.logging import AccessFormatter

from tether.observability.logs import TEXT_FORMAT
from tether.providers.redaction import Redactor, redact_records

ACCESS = (
    '%s - "%s %s HTTP/%s" %d',
    ("127.0.0.1:36210", "GET", "/v1/sessions/ses_01a23e757db4/events?offset=0000_0042", "1.1", 200),
)
WEBSOCKET = ('%s - "WebSocket %s" [accepted]', ("127.0.0.1:36210", "/v1/sessions/s1/ws?offset=-1"))
WITH_TOKEN = ('%s - "WebSocket %s" [accepted]', ("127.0.0.1:36210", "/v1/sessions/s1/ws?token=a.b"))
WARNING = ("run %s failed: %s", ("run_01a23e7dd11ce73c670c08", "openai: HTTP 503: overloaded"))


def per_record(logger: logging.Logger, record: tuple[str, tuple[object, ...]], n: int) -> float:
    msg, args = record
    start = time.process_time_ns()
    for _ in range(n):
        logger.info(msg, *args)
    return (time.process_time_ns() - start) / n / 1000


def measure_once(keys: list[str] | None, records: int) -> dict[str, float]:
    """Microseconds per record of each kind; ``keys`` None: without redaction."""
    factory = logging.getLogRecordFactory()
    if keys is not None:
        redact_records(Redactor(keys))
    try:
        out: dict[str, float] = {}
        for name, record, formatter in (
            (
                "access",
                ACCESS,
                AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'),
            ),
            ("websocket", WEBSOCKET, logging.Formatter(TEXT_FORMAT)),
            ("?token=", WITH_TOKEN, logging.Formatter(TEXT_FORMAT)),
            ("warning", WARNING, logging.Formatter(TEXT_FORMAT)),
        ):
            logger = logging.getLogger(f"bench.{name}")
            logger.propagate = False
            handler = logging.StreamHandler(io.StringIO())
            handler.setFormatter(formatter)
            logger.handlers = [handler]
            logger.setLevel(logging.INFO)
            out[name] = per_record(logger, record, records)
        return out
    finally:
        logging.setLogRecordFactory(factory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=9)
    opts = parser.parse_args()
    configs: dict[str, list[str] | None] = {"none": None}
    for n in (0, 2, 10, 100):
        configs[str(n)] = ["sk-" + secrets.token_urlsafe(32) for _ in range(n)]
    # Round-robin, so that a busy moment of the machine weighs on every configuration alike.
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for _ in range(opts.repeats):
        for name, keys in configs.items():
            runs[name].append(measure_once(keys, opts.records))
    medians = {
        name: {kind: statistics.median(r[kind] for r in got) for kind in got[0]}
        for name, got in runs.items()
    }
    base = medians.pop("none")
    print(f"{'secrets':>10} " + " ".join(f"{kind:>20}" for kind in base))
    print(f"{'none':>10} " + " ".join(f"{v:>17.2f} us" for v in base.values()))
    for name, got in medians.items():
        cells = (f"{got[k]:.2f} us (+{got[k] - base[k]:.2f})" for k in base)
        print(f"{name:>10} " + " ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
