"""The runtime benchmark's journal scenarios, run for real and small.

``model-streaming`` (a model session per reader, answers streamed from
benchmarks/upstream.py, the path the run journal is on) and ``suspended``
(runs waiting on a client tool, suspended at once, then answered) each start
a `tether serve` child; a change in the model path, in suspension or in the
events they read that breaks the benchmark is caught by the suite.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness

BENCH = harness.REPO_ROOT / "benchmarks"


async def bench(*args: str) -> list[str]:
    argv = [sys.executable, str(BENCH / "bench_runtime.py"), *args]
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def figure(lines: list[str], pattern: str) -> list[float]:
    """The numbers ``pattern``'s groups match in the one line that matches it."""
    found = [m for m in map(re.compile(pattern).search, lines) if m]
    assert len(found) == 1, (pattern, lines)
    return [float(g) for g in found[0].groups()]


async def test_model_streaming_measures_the_servers_cpu_and_every_tokens_delay() -> None:
    lines = await bench("--scenarios", "model-streaming", "--sessions", "3",
                        "--tokens", "10", "--model-rounds", "2")  # fmt: skip
    # Every token of both rounds of the 3 sessions was received and timed.
    [tokens] = figure(lines, r"^model streaming: 3 sessions .* \((\d+) tokens\)")
    assert tokens == 60
    first, second, per_token = figure(
        lines, r"server CPU per round: ([\d.]+), ([\d.]+) s .* per token ([\d.]+) us"
    )
    assert first > 0 and second > 0 and per_token > 0
    p50, p99 = figure(lines, r"upstream send -> SSE receipt: p50 ([\d.]+) ms, p99 ([\d.]+) ms")
    assert 0 < p50 <= p99
    # Only the scenario asked for ran.
    assert not any(line.startswith(("suspended runs", "tool loop")) for line in lines)


async def test_suspended_measures_memory_and_cpu_per_suspended_run_and_resumes_them() -> None:
    lines = await bench("--scenarios", "suspended", "--suspended", "20",
                        "--resumes", "3", "--quiet-s", "0.5")  # fmt: skip
    assert any(line.startswith("suspended runs: 20 demo sessions") for line in lines), lines
    figure(lines, r"per idle session (-?[\d.]+) KiB, per session with a suspended run (-?[\d.]+)")
    idle, suspended = figure(lines, r"CPU over 0.5 s: ([\d.]+) s .*, ([\d.]+) s with the suspended")
    assert idle >= 0 and suspended >= 0
    # Each of the 3 answers resumed its run, which then completed.
    resume_p50, resume_p99, end_p50, end_p99 = figure(
        lines,
        r"^  3 answered one at a time: answer POST -> run-resume p50 ([\d.]+) ms, "
        r"p99 ([\d.]+) ms; -> run-end p50 ([\d.]+) ms, p99 ([\d.]+) ms",
    )
    assert 0 < resume_p50 <= resume_p99 and resume_p50 <= end_p50 <= end_p99
    assert not any(line.startswith("model streaming") for line in lines)
