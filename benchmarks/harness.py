"""What every benchmark here shares: server processes, /proc sampling, percentiles, tables.

Each benchmark starts the servers it measures as child processes on free
127.0.0.1 ports, waits until they answer, charges them the CPU and memory of
their processes, and stops them with all their children, also when it fails or
is interrupted. Doing that one way in one place keeps the figures of different
benchmarks comparable: the same percentile, the same notion of "the server's
processes", the same CPU clock, the same table layout.

Linux only: CPU time, RSS and process trees are read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark cannot go on: a server did not start, answered wrongly, or lost data."""


# --------------------------------------------------------------------------- /proc


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it, parents first."""
    children = _children_by_parent()
    out = [root]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], []))
        i += 1
    return out


def _listening_socket_links(port: int) -> set[str]:
    links: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A":  # 0A = LISTEN
                continue
            if int(parts[1].rsplit(":", 1)[1], 16) == port:
                links.add(f"socket:[{parts[9]}]")
    return links


def listening_pids(root: int, port: int) -> list[int]:
    """Processes in root's tree that hold the listening socket of ``port``."""
    links = _listening_socket_links(port)
    found: list[int] = []
    if not links:
        return found
    for pid in process_tree(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in links:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found


def _status_kib(pids: Sequence[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])  # kB (KiB)
                    break
        except OSError as exc:
            raise BenchError(f"cannot read {key[:-1]} of pid {pid}: {exc}") from exc
    return total


def rss_kib(pids: Sequence[int]) -> int:
    """Resident memory of ``pids`` now, summed (KiB)."""
    return _status_kib(pids, "VmRSS:")


def peak_rss_kib(pids: Sequence[int]) -> int:
    """The highest resident memory each of ``pids`` ever had, summed (KiB)."""
    return _status_kib(pids, "VmHWM:")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time used so far by ``pids`` (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def self_cpu_seconds() -> float:
    """User plus system CPU time used so far by this process."""
    t = os.times()
    return t.user + t.system


class MachineCpu(NamedTuple):
    """CPU time of the whole machine since boot, every CPU together, in seconds."""

    #: Spent running something (user, nice, system, irq, softirq).
    busy: float
    #: Taken by the hypervisor for other guests: on a busy host it grows, and every
    #: latency measured meanwhile with it.
    steal: float
    #: All of it, idle included.
    total: float

    def since(self, earlier: MachineCpu) -> MachineCpu:
        """The CPU time spent between ``earlier`` (a reading of :func:`machine_cpu`) and this."""
        return MachineCpu(*(a - b for a, b in zip(self, earlier, strict=True)))


def machine_cpu() -> MachineCpu:
    """The machine's CPU time so far (all zero where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return MachineCpu(0.0, 0.0, 0.0)
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) / CLK_TCK for f in fields)
    busy = user + nice + system + irq + softirq
    return MachineCpu(busy, steal, busy + idle + iowait + steal)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def http_status(port: int, path: str, timeout_s: float = 2.0) -> int:
    """The status of a one-shot ``GET path`` to the local ``port`` (start-up probes).

    Raises OSError or TimeoutError while nothing listens, BenchError if what
    answers does not speak HTTP/1.
    """
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            head = await reader.read(65536)
        finally:
            writer.close()
    if not head.startswith(b"HTTP/1."):
        raise BenchError(f"not HTTP: {head[:60]!r}")
    return int(head[9:12])


#: Servers started and not yet stopped, for :func:`kill_all_servers`.
_LIVE: set[ServerProcess] = set()


@dataclass(eq=False)
class ServerProcess:
    """A server under measurement: a child process in a process group of its own.

    Its output goes to ``workdir/log_name``; :meth:`stop` ends the whole group,
    so a server's workers and helpers never outlive the benchmark.
    """

    name: str
    argv: list[str]
    port: int
    workdir: Path
    cwd: Path = REPO_ROOT
    #: Set over this process's environment.
    env: dict[str, str] = field(default_factory=dict)
    log_name: str = "server.log"
    #: The default readiness probe: ``GET health_path`` answers ``health_status``
    #: (any status if None, for a server without a health route).
    health_path: str = "/healthz"
    health_status: int | None = 200
    #: Which processes count as the server for CPU and RSS: those holding the
    #: listening socket (the workers, not a supervisor; the whole tree if none
    #: does) or the whole tree (a gateway's helpers are part of its cost).
    measure: Literal["listening", "tree"] = "listening"
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    #: The processes counted as the server, known once it is ready.
    pids: list[int] = field(default_factory=list)
    #: How ``pids`` were found, for the report.
    pids_note: str = ""
    #: Seconds from start to the first good answer.
    startup_s: float = math.nan

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    def start(self) -> None:
        self.log = self.log_path.open("wb")
        _LIVE.add(self)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            start_new_session=True,  # own process group: killpg() gets every child
        )

    def log_tail(self, n: int = 25) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:]) or "(empty log)"

    async def healthy(self) -> bool:
        """Whether ``GET health_path`` answers ``health_status`` (the default probe)."""
        status = await http_status(self.port, self.health_path)
        return self.health_status is None or status == self.health_status

    async def wait_ready(
        self, timeout_s: float, ready: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Poll ``ready`` (default :meth:`healthy`) until true; then find the server's pids."""
        assert self.proc is not None
        probe = ready or self.healthy
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: exited with status {self.proc.returncode} during start-up"
                    f"\n--- {self.log_path}\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, TimeoutError, BenchError):
                if await probe():
                    break
            if time.monotonic() - started > timeout_s:
                raise BenchError(
                    f"{self.name}: not ready on {self.base_url} after {timeout_s:g} s"
                    f"\n--- {self.log_path}\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)
        self.startup_s = time.monotonic() - started
        self.pids = listening_pids(self.proc.pid, self.port) if self.measure == "listening" else []
        if self.pids:
            self.pids_note = "process(es) holding the listening socket"
        else:
            self.pids = process_tree(self.proc.pid)
            self.pids_note = "whole process tree"

    def cpu(self) -> float:
        """CPU seconds the server's processes used so far."""
        return cpu_seconds(self.pids)

    def stop(self) -> None:
        """End the server's process group: TERM, then KILL for whatever is left."""
        proc = self.proc
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            # Kill whatever is left of the group (workers, or a server that ignored TERM).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self.log is not None:
            self.log.close()
            self.log = None
        _LIVE.discard(self)


def kill_all_servers() -> None:
    """Stop every server still running (on failure or interruption)."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


def cleanup_workroot(workroot: Path, keep_logs: bool) -> None:
    """Remove the servers' temporary directories; after a failure keep their logs."""
    if not keep_logs:
        shutil.rmtree(workroot, ignore_errors=True)
        return
    for data_dir in workroot.glob("*/data"):
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"server logs kept in {workroot}", file=sys.stderr)


# --------------------------------------------------------------------------- the client side


def client_loop(
    no_uvloop: bool,
) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """The benchmark client's event loop factory (uvloop when available) and its name."""
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
    return None, "asyncio"


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-files limit towards ``wanted``; the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return int(soft)


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]: the smallest value with q% at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def over_rounds(values: Sequence[float]) -> dict[str, float]:
    """One figure over a benchmark's rounds: the median the tables show, and its spread."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def format_text_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        pairs = zip(row[1:], widths[1:], strict=True)
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in pairs]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table in markdown, the figure columns right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the record


def command_line() -> str:
    """This benchmark's command line, as it can be typed again from the repository."""
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe, *sys.argv])


def _git_commit() -> str:
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if res.returncode == 0:
            commit = res.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            if dirty:
                commit += " + uncommitted changes"
    return commit


def machine_info() -> dict[str, Any]:
    """The machine and checkout a run measured, for its report."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }
