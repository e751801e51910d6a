"""The client-side methods an ACP agent may call, served inside one directory.

An ACP agent asks its client to read and write files (``fs/read_text_file``,
``fs/write_text_file``) and to run commands (``terminal/*``). tether serves them
inside the session's workspace directory and nowhere else: every path is resolved
(symlinks included) before use and refused when it lands outside the root.

Terminals are real child processes, each the leader of its own session, so that
killing its process group also ends what a shell started in the background. They get
a minimal environment (``PATH``, ``HOME`` = the root, ``LANG``, plus what the agent
asks for): tether's own environment holds provider keys and is never passed on.
A terminal's ``cwd`` is confined to the root, but the command itself may read
anything the server's user can: an agent that must not is configured with
``terminal`` turned off.

No ACP types here: the ACP client maps the SDK's models onto these methods and turns
:class:`WorkspaceRefused` into a JSON-RPC error to the agent.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import secrets
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Seconds a terminal's process has to exit after SIGTERM before its group gets SIGKILL.
TERM_GRACE = 1.0
#: Bytes one read of a terminal's output pipe, or of a file's line, takes at most.
_CHUNK = 65_536
#: Reads of the output pipe after the command exits: bounded, because a background
#: process still writing would otherwise keep the drain going for ever.
_DRAIN_READS = 64


class WorkspaceRefused(Exception):
    """A request the workspace will not serve: a path outside it, a method turned off,
    a terminal id it does not know. str(err) is safe to send to the agent."""


@dataclass(frozen=True, slots=True)
class WorkspacePolicy:
    """What an agent's configuration lets it do in its workspace."""

    #: fs/read_text_file and fs/write_text_file.
    fs: bool = True
    #: terminal/*.
    terminal: bool = True
    #: The most one read returns; a larger slice is refused (ask for fewer lines).
    max_read_bytes: int = 1_048_576
    #: The output a terminal keeps when the agent gives no outputByteLimit, and the
    #: most it keeps when it gives a larger one (the tail is held in memory).
    terminal_output_limit: int = 1_048_576


@dataclass(frozen=True, slots=True)
class TerminalOutput:
    """A terminal's output so far, and how its command ended."""

    output: str
    #: Whether the start of the output was dropped to stay within the byte limit.
    truncated: bool
    #: None while the command runs, and when a signal ended it.
    exit_code: int | None
    #: The name of the signal that ended the command (``"SIGKILL"``), if one did.
    signal: str | None


class Workspace:
    """One directory an agent works in, and the terminals it has started there."""

    def __init__(self, root: Path, policy: WorkspacePolicy = WorkspacePolicy()) -> None:
        root.mkdir(parents=True, exist_ok=True)
        #: The real path of the directory (created if missing): every path is checked against it.
        self.root = root.resolve(strict=True)
        self.policy = policy
        self._terminals: dict[str, _Terminal] = {}
        self._closed = False

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` (absolute, or relative to the root), refused
        when it or a symlink on the way leads outside the root."""
        try:
            real = Path(os.path.realpath(self.root / path))
        except ValueError:  # an embedded NUL byte
            raise WorkspaceRefused(f"{self._shown(path)} is not a valid path") from None
        if not real.is_relative_to(self.root):
            raise WorkspaceRefused(f"{self._shown(path)} is outside the workspace")
        return real

    def _shown(self, path: str) -> str:
        """``path`` as a refusal may name it: relative to the root, and only if it is
        written inside the root (an absolute host path elsewhere is never repeated)."""
        written = Path(os.path.normpath(self.root / path))
        if written.is_relative_to(self.root):
            return repr(str(written.relative_to(self.root)))
        return "the path"

    async def read_text_file(
        self, path: str, line: int | None = None, limit: int | None = None
    ) -> str:
        """The file's text from ``line`` (1-based) for ``limit`` lines, line ends kept."""
        self._require(self.policy.fs, "fs/read_text_file", "fs")
        if limit is not None and limit < 0:
            raise WorkspaceRefused("limit must not be negative")
        target = self.resolve(path)
        first = max(line or 1, 1)
        try:
            data = await asyncio.to_thread(
                _read_lines, target, first, limit, self.policy.max_read_bytes
            )
        except OSError as err:
            raise WorkspaceRefused(f"cannot read {self._shown(path)}: {err.strerror}") from None
        if data is None:
            raise WorkspaceRefused(
                f"reading {self._shown(path)} would return more than {self.policy.max_read_bytes} "
                "bytes: ask for fewer lines with line and limit"
            )
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise WorkspaceRefused(f"{self._shown(path)} is not UTF-8 text") from None

    async def write_text_file(self, path: str, content: str) -> None:
        """Replace the file's text at once (readers see the old or the new file, never
        half of one), creating its parent directories."""
        self._require(self.policy.fs, "fs/write_text_file", "fs")
        target = self.resolve(path)
        if target == self.root:
            raise WorkspaceRefused("the workspace directory is not a file")
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise WorkspaceRefused("the content is not valid Unicode text") from None
        try:
            await asyncio.to_thread(_write_atomically, target, data)
        except OSError as err:
            raise WorkspaceRefused(f"cannot write {self._shown(path)}: {err.strerror}") from None

    async def create_terminal(
        self,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
    ) -> str:
        """Start ``command`` with ``args`` (no shell unless the command is one) and
        return the terminal's id."""
        self._require(self.policy.terminal, "terminal/create", "terminal")
        if self._closed:
            raise WorkspaceRefused("the workspace is closed")
        workdir = self.root if cwd is None else self.resolve(cwd)
        if not workdir.is_dir():
            raise WorkspaceRefused(f"cwd {self._shown(str(cwd))} is not a directory")
        limit = self.policy.terminal_output_limit
        if output_byte_limit is not None:
            limit = min(max(output_byte_limit, 0), limit)
        terminal = await _Terminal.start(
            command, args, _environment(self.root, env), workdir, limit
        )
        terminal_id = f"term_{secrets.token_hex(8)}"
        self._terminals[terminal_id] = terminal
        return terminal_id

    async def terminal_output(self, terminal_id: str) -> TerminalOutput:
        """The output so far; the exit status once the command has ended."""
        return self._terminal(terminal_id, "terminal/output").snapshot()

    async def wait_for_terminal_exit(self, terminal_id: str) -> TerminalOutput:
        """The output and the exit status, once the command has ended."""
        terminal = self._terminal(terminal_id, "terminal/wait_for_exit")
        await terminal.exited()
        return terminal.snapshot()

    async def kill_terminal(self, terminal_id: str) -> None:
        """End the command and what it started; its output stays readable until release."""
        await self._terminal(terminal_id, "terminal/kill").stop()

    async def release_terminal(self, terminal_id: str) -> None:
        """End the command if it still runs and forget the terminal."""
        self._terminal(terminal_id, "terminal/release")
        await self._terminals.pop(terminal_id).close()

    async def aclose(self) -> None:
        """End and reap every terminal: the owner calls this when the session ends."""
        self._closed = True
        terminals, self._terminals = list(self._terminals.values()), {}
        await asyncio.gather(*(terminal.close() for terminal in terminals))

    def _terminal(self, terminal_id: str, method: str) -> _Terminal:
        self._require(self.policy.terminal, method, "terminal")
        try:
            return self._terminals[terminal_id]
        except KeyError:
            raise WorkspaceRefused(f"no terminal {terminal_id!r}") from None

    @staticmethod
    def _require(enabled: bool, method: str, setting: str) -> None:
        if not enabled:
            raise WorkspaceRefused(
                f"{method} is turned off for this agent by its configuration ({setting} = false)"
            )


def _read_lines(path: Path, first: int, limit: int | None, max_bytes: int) -> bytes | None:
    """Lines ``first``.. of the file for ``limit`` lines; None past ``max_bytes``.
    Reads a line in chunks so that a huge file without newlines stays bounded."""
    kept = bytearray()
    number = 1
    with path.open("rb") as file:
        while limit is None or number < first + limit:
            piece = file.readline(_CHUNK)
            if not piece:
                break
            if number >= first:
                kept += piece
                if len(kept) > max_bytes:
                    return None
            if piece.endswith(b"\n"):
                number += 1
    return bytes(kept)


def _write_atomically(target: Path, data: bytes) -> None:
    """Write a temporary file beside ``target`` and rename it over: the rename is atomic.
    The file keeps the permissions it had (a script stays executable)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        if target.exists():
            os.chmod(temporary, target.stat().st_mode & 0o7777)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _environment(root: Path, requested: Mapping[str, str] | None) -> dict[str, str]:
    """A minimal environment: tether's own holds provider keys and is not passed on."""
    base = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    return base | dict(requested or {})


class _Tail:
    """The last ``limit`` bytes of a stream, starting on a UTF-8 character boundary."""

    def __init__(self, limit: int) -> None:
        self._data = bytearray()
        self._limit = limit
        self.truncated = False

    def append(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self._limit
        if excess > 0:
            del self._data[:excess]
            self.truncated = True
            # Continuation bytes (0b10xxxxxx) left at the front belong to a character
            # whose start was cut: drop them (a character has at most three).
            start = 0
            while start < min(3, len(self._data)) and self._data[start] & 0xC0 == 0x80:
                start += 1
            del self._data[:start]

    def text(self, final: bool) -> str:
        """The text; while the stream is open, a character not yet complete waits."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return decoder.decode(bytes(self._data), final)


class _Terminal:
    """One command: its process group, the tail of its output, how it ended.

    The output pipe is read by the event loop, not by asyncio's subprocess pipes,
    whose ``wait()`` also waits for the pipe to close: a background process holding
    it would then hide the command's exit."""

    def __init__(self, process: asyncio.subprocess.Process, output: int, limit: int) -> None:
        self._process = process
        self._output: int | None = output
        self._tail = _Tail(limit)
        asyncio.get_running_loop().add_reader(output, self._read)
        self._ended = asyncio.create_task(self._wait())

    @classmethod
    async def start(
        cls, command: str, args: Sequence[str], env: dict[str, str], cwd: Path, limit: int
    ) -> _Terminal:
        output, writer = os.pipe()
        os.set_blocking(output, False)
        try:
            process = await asyncio.create_subprocess_exec(
                command,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=writer,
                stderr=writer,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            os.close(output)
            raise WorkspaceRefused(f"cannot start {command!r}: {err.strerror}") from None
        finally:
            os.close(writer)
        return cls(process, output, limit)

    def snapshot(self) -> TerminalOutput:
        returncode = self._process.returncode if self._ended.done() else None
        return TerminalOutput(
            output=self._tail.text(final=self._output is None),
            truncated=self._tail.truncated,
            exit_code=returncode if returncode is not None and returncode >= 0 else None,
            signal=_signal_name(-returncode) if returncode is not None and returncode < 0 else None,
        )

    async def exited(self) -> None:
        """Wait for the command to end (a cancelled waiter leaves the watch running)."""
        await asyncio.shield(self._ended)

    async def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after the grace; the command is reaped."""
        self._signal_group(signal.SIGTERM)
        await asyncio.wait({self._ended}, timeout=TERM_GRACE)
        self._signal_group(signal.SIGKILL)
        await self.exited()

    async def close(self) -> None:
        await self.stop()
        self._close_output()

    def _signal_group(self, signum: signal.Signals) -> None:
        # Sent even when the command has ended: what it left in the background dies too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    async def _wait(self) -> None:
        await self._process.wait()
        for _ in range(_DRAIN_READS):  # what the command wrote before it ended
            if not self._read():
                break

    def _read(self) -> bool:
        """Take what the pipe holds; False when it holds nothing now or is closed."""
        if self._output is None:
            return False
        try:
            chunk = os.read(self._output, _CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            self._close_output()
            return False
        self._tail.append(chunk)
        return True

    def _close_output(self) -> None:
        if self._output is not None:
            asyncio.get_running_loop().remove_reader(self._output)
            os.close(self._output)
            self._output = None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
