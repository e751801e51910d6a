"""The benchmarks' shared harness: percentiles, tables, CPU readings, server processes.

Every benchmark's figures go through these pieces, so they are checked here
rather than trusted from one benchmark run to the next.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness


def test_percentile_is_the_nearest_rank_of_the_values_in_any_order() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert harness.percentile(values, 50) == 50.0
    assert harness.percentile(values, 99) == 99.0
    assert harness.percentile(values, 100) == 100.0
    assert harness.percentile(values, 0) == 1.0
    assert harness.percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(harness.percentile([], 50))


def test_over_rounds_gives_the_median_and_the_spread() -> None:
    assert harness.over_rounds([3.0, 1.0, 10.0, 2.0]) == {
        "median": 2.5,
        "min": 1.0,
        "max": 10.0,
        "n": 4,
    }


def test_text_table_aligns_labels_left_and_figures_right() -> None:
    table = harness.format_text_table(["metric", "a"], [["x", "1.5"], ["longer", "12.25"]])
    assert table.splitlines() == [
        "metric      a",
        "------  -----",
        "x         1.5",
        "longer  12.25",
    ]


def test_markdown_table_right_aligns_the_figure_columns() -> None:
    table = harness.format_markdown_table(["metric", "a", "b"], [["x", "1", "2"]])
    assert table.splitlines() == ["| metric | a | b |", "|---|---:|---:|", "| x | 1 | 2 |"]


def test_machine_cpu_since_an_earlier_reading_is_the_difference() -> None:
    earlier = harness.MachineCpu(busy=1.0, steal=0.5, total=4.0)
    later = harness.MachineCpu(busy=3.0, steal=0.75, total=10.0)
    assert later.since(earlier) == harness.MachineCpu(busy=2.0, steal=0.25, total=6.0)


def test_machine_cpu_reads_a_whole_that_holds_its_parts() -> None:
    now = harness.machine_cpu()
    assert now.total >= now.busy + now.steal > 0


#: A server that starts a helper child, then answers 200 on /healthz.
SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("helper", helper.pid, flush=True)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent (the test) has not reaped it.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    """The process ends within ``seconds``: a SIGKILLed process exits when it is next
    scheduled, which on a loaded machine is a moment after kill() returns."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def helper_pid(server: harness.ServerProcess) -> int:
    for _ in range(100):
        for line in server.log_path.read_text().splitlines():
            if line.startswith("helper "):
                return int(line.split()[1])
        time.sleep(0.05)
    raise AssertionError(server.log_tail())


async def test_a_server_is_ready_measured_and_stopped_with_its_children(tmp_path: Path) -> None:
    port = harness.free_port()
    server = harness.ServerProcess("toy", [sys.executable, "-c", SERVER, str(port)], port, tmp_path)
    server.start()
    try:
        await server.wait_ready(20.0)
        assert server.proc is not None
        helper = helper_pid(server)
        assert server.pids == [server.proc.pid], "only the process holding the socket"
        assert helper in harness.process_tree(server.proc.pid)
        assert harness.rss_kib(server.pids) > 0
        assert harness.peak_rss_kib(server.pids) >= harness.rss_kib(server.pids)
        assert server.cpu() >= 0.0
    finally:
        server.stop()
    assert gone_within(helper, 5.0)
    assert server.proc.poll() is not None


async def test_the_whole_tree_is_measured_when_asked(tmp_path: Path) -> None:
    port = harness.free_port()
    argv = [sys.executable, "-c", SERVER, str(port)]
    server = harness.ServerProcess("toy", argv, port, tmp_path, measure="tree")
    server.start()
    try:
        await server.wait_ready(20.0)
        assert helper_pid(server) in server.pids
    finally:
        harness.kill_all_servers()
    assert server.proc is not None and server.proc.poll() is not None


async def test_a_server_that_exits_during_start_up_is_reported_with_its_log(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, "-c", "print('no config here'); raise SystemExit(3)"]
    server = harness.ServerProcess("broken", argv, harness.free_port(), tmp_path)
    server.start()
    try:
        with pytest.raises(harness.BenchError, match=r"(?s)status 3.*no config here"):
            await server.wait_ready(20.0)
    finally:
        server.stop()
