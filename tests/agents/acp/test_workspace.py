"""An ACP agent's files and terminals are served inside its workspace and nowhere else.

Real files in temporary directories and real child processes: what is checked is what
the operating system did (the file on disk, the process group gone).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tether.agents.acp.workspace import (
    TerminalOutput,
    Workspace,
    WorkspacePolicy,
    WorkspaceRefused,
)

SECRET = "the outside world's secret"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace, holding a file the agent must not reach."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text(SECRET)
    return path


@pytest.fixture
async def workspace(tmp_path: Path, outside: Path) -> AsyncIterator[Workspace]:
    ws = Workspace(tmp_path / "root")
    try:
        yield ws
    finally:
        await ws.aclose()


def python(code: str) -> tuple[str, list[str]]:
    """A terminal command running ``code`` in this interpreter (no shell quoting)."""
    return sys.executable, ["-c", code]


def refused(err: pytest.ExceptionInfo[WorkspaceRefused], outside: Path) -> str:
    """The refusal's message, checked to name nothing outside the workspace."""
    message = str(err.value)
    assert str(outside) not in message and SECRET not in message
    return message


# Paths


async def test_a_relative_or_absolute_path_inside_the_root_is_served(workspace: Workspace) -> None:
    (workspace.root / "notes.txt").write_text("hello\n")
    assert await workspace.read_text_file("notes.txt") == "hello\n"
    assert await workspace.read_text_file(str(workspace.root / "notes.txt")) == "hello\n"


async def test_dot_dot_out_of_the_root_is_refused(workspace: Workspace, outside: Path) -> None:
    with pytest.raises(WorkspaceRefused, match="outside the workspace") as err:
        await workspace.read_text_file("../outside/secret.txt")
    refused(err, outside)
    with pytest.raises(WorkspaceRefused, match="outside the workspace"):
        await workspace.write_text_file(str(workspace.root / ".." / "escaped.txt"), "x")
    assert not (workspace.root.parent / "escaped.txt").exists()


async def test_an_absolute_path_elsewhere_is_refused(workspace: Workspace, outside: Path) -> None:
    with pytest.raises(WorkspaceRefused, match=r"^the path is outside the workspace$") as err:
        await workspace.read_text_file(str(outside / "secret.txt"))
    refused(err, outside)
    with pytest.raises(WorkspaceRefused, match="outside the workspace"):
        await workspace.write_text_file(str(outside / "secret.txt"), "overwritten")
    assert (outside / "secret.txt").read_text() == SECRET


async def test_a_symlink_pointing_out_is_refused_without_naming_its_target(
    workspace: Workspace, outside: Path
) -> None:
    (workspace.root / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(WorkspaceRefused) as err:
        await workspace.read_text_file("link.txt")
    assert refused(err, outside) == "'link.txt' is outside the workspace"
    with pytest.raises(WorkspaceRefused) as err:
        await workspace.write_text_file("link.txt", "overwritten")
    refused(err, outside)
    assert (outside / "secret.txt").read_text() == SECRET


async def test_a_path_through_a_symlinked_directory_is_refused(
    workspace: Workspace, outside: Path
) -> None:
    (workspace.root / "shared").symlink_to(outside, target_is_directory=True)
    with pytest.raises(WorkspaceRefused) as err:
        await workspace.read_text_file("shared/secret.txt")
    refused(err, outside)
    with pytest.raises(WorkspaceRefused) as err:
        await workspace.write_text_file("shared/new/planted.txt", "x")
    refused(err, outside)
    assert not (outside / "new").exists()


async def test_a_symlink_that_stays_inside_is_followed(workspace: Workspace) -> None:
    (workspace.root / "real.txt").write_text("real\n")
    (workspace.root / "alias.txt").symlink_to("real.txt")
    assert await workspace.read_text_file("alias.txt") == "real\n"


# Reads


async def test_line_is_1_based_and_limit_counts_lines(workspace: Workspace) -> None:
    (workspace.root / "f.txt").write_text("one\ntwo\nthree\nfour\n")
    assert await workspace.read_text_file("f.txt", line=2, limit=2) == "two\nthree\n"
    assert await workspace.read_text_file("f.txt", line=3) == "three\nfour\n"
    assert await workspace.read_text_file("f.txt", limit=1) == "one\n"
    assert await workspace.read_text_file("f.txt", line=9) == ""
    assert await workspace.read_text_file("f.txt", line=2, limit=0) == ""


async def test_a_read_past_the_byte_limit_is_refused_and_a_smaller_slice_served(
    tmp_path: Path,
) -> None:
    ws = Workspace(tmp_path / "root", WorkspacePolicy(max_read_bytes=100))
    (ws.root / "big.txt").write_text("".join(f"{n:09d}\n" for n in range(20)))  # 200 bytes
    with pytest.raises(WorkspaceRefused, match="more than 100 bytes"):
        await ws.read_text_file("big.txt")
    assert await ws.read_text_file("big.txt", line=11, limit=10) == "".join(
        f"{n:09d}\n" for n in range(10, 20)
    )


async def test_a_missing_file_a_directory_and_non_utf8_bytes_are_refused_clearly(
    workspace: Workspace,
) -> None:
    with pytest.raises(WorkspaceRefused, match=r"cannot read 'missing\.txt': No such file") as err:
        await workspace.read_text_file(str(workspace.root / "missing.txt"))
    assert str(workspace.root) not in str(err.value)  # named relative to the root
    (workspace.root / "dir").mkdir()
    with pytest.raises(WorkspaceRefused, match="Is a directory"):
        await workspace.read_text_file("dir")
    (workspace.root / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(WorkspaceRefused, match="not UTF-8 text"):
        await workspace.read_text_file("bin")


# Writes


async def test_a_write_creates_its_parent_directories(workspace: Workspace) -> None:
    await workspace.write_text_file("src/pkg/mod.py", "x = 'é'\n")
    assert (workspace.root / "src/pkg/mod.py").read_text(encoding="utf-8") == "x = 'é'\n"


async def test_a_write_replaces_the_file_at_once_and_keeps_its_mode(
    workspace: Workspace,
) -> None:
    """A reader that opened the old file keeps reading the old file: the new text is a
    new file renamed over it, never the old one rewritten in place."""
    script = workspace.root / "run.sh"
    script.write_text("echo old\n")
    script.chmod(0o755)
    with script.open() as reader:
        await workspace.write_text_file("run.sh", "echo new\n")
        assert reader.read() == "echo old\n"
    assert script.read_text() == "echo new\n"
    assert script.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in workspace.root.iterdir()) == ["run.sh"]  # no temp left


# Terminals


async def test_a_terminal_runs_the_command_with_its_args_and_merges_stderr(
    workspace: Workspace,
) -> None:
    command, args = python(
        "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr)"
    )
    terminal = await workspace.create_terminal(command, args)
    assert await workspace.wait_for_terminal_exit(terminal) == TerminalOutput(
        output="out\nerr\n", truncated=False, exit_code=0, signal=None
    )
    assert await workspace.terminal_output(terminal) == await workspace.wait_for_terminal_exit(
        terminal
    )


async def test_args_reach_the_command_as_given_without_a_shell(workspace: Workspace) -> None:
    terminal = await workspace.create_terminal("printf", ["%s|", "$HOME", "a b", "*"])
    assert (await workspace.wait_for_terminal_exit(terminal)).output == "$HOME|a b|*|"


async def test_truncation_keeps_the_end_cut_at_a_character_boundary(
    workspace: Workspace,
) -> None:
    """'€' is 3 bytes: the last 7 bytes start inside one, so only two whole ones (6 bytes)
    are kept; with a limit of 6 the cut falls between characters and all 6 are kept."""
    command, args = python("import sys; sys.stdout.write('start' + '€' * 1000)")
    for limit, kept in [(7, "€€"), (6, "€€"), (5, "€"), (2, "")]:
        terminal = await workspace.create_terminal(command, args, output_byte_limit=limit)
        result = await workspace.wait_for_terminal_exit(terminal)
        assert (result.output, result.truncated) == (kept, True), limit
    command, args = python("import sys; sys.stdout.write('ab😀')")  # 4-byte character
    terminal = await workspace.create_terminal(command, args, output_byte_limit=5)
    assert (await workspace.wait_for_terminal_exit(terminal)).output == "b😀"


async def test_the_policy_limit_caps_the_output_an_agent_asks_to_keep(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "root", WorkspacePolicy(terminal_output_limit=4))
    try:
        terminal = await ws.create_terminal("printf", ["0123456789"], output_byte_limit=1000)
        result = await ws.wait_for_terminal_exit(terminal)
        assert (result.output, result.truncated) == ("6789", True)
    finally:
        await ws.aclose()


async def test_exit_code_and_signal_are_reported(workspace: Workspace) -> None:
    exited = await workspace.create_terminal("sh", ["-c", "exit 3"])
    killed = await workspace.create_terminal("sh", ["-c", "kill -KILL $$"])
    assert (await workspace.wait_for_terminal_exit(exited)).exit_code == 3
    result = await workspace.wait_for_terminal_exit(killed)
    assert (result.exit_code, result.signal) == (None, "SIGKILL")


async def test_a_background_process_holding_the_output_does_not_hide_the_exit(
    workspace: Workspace,
) -> None:
    terminal = await workspace.create_terminal("sh", ["-c", "sleep 100 & echo done; exit 7"])
    result = await asyncio.wait_for(workspace.wait_for_terminal_exit(terminal), 10)
    assert (result.output, result.exit_code) == ("done\n", 7)


async def test_kill_leaves_the_output_readable_until_release(workspace: Workspace) -> None:
    terminal = await workspace.create_terminal("sh", ["-c", "echo started; exec sleep 100"])
    await output_containing(workspace, terminal, "started")
    await workspace.kill_terminal(terminal)
    result = await workspace.terminal_output(terminal)
    assert (result.output, result.exit_code, result.signal) == ("started\n", None, "SIGTERM")
    assert await workspace.wait_for_terminal_exit(terminal) == result
    await workspace.release_terminal(terminal)
    with pytest.raises(WorkspaceRefused, match="no terminal"):
        await workspace.terminal_output(terminal)


async def test_release_kills_a_running_command(workspace: Workspace) -> None:
    terminal = await workspace.create_terminal("sh", ["-c", "echo $$; exec sleep 100"])
    pid = int((await output_containing(workspace, terminal, "\n")).output)
    await workspace.release_terminal(terminal)
    assert not process_exists(pid)  # ended and reaped


async def test_aclose_leaves_no_process_of_a_terminal_alive(workspace: Workspace) -> None:
    """The shell and the child it put in the background share the terminal's process
    group, and both go: no orphan is left running."""
    terminal = await workspace.create_terminal("sh", ["-c", "sleep 100 & echo $$; sleep 100"])
    pgid = int((await output_containing(workspace, terminal, "\n")).output)
    await until(lambda: len(live_group_members(pgid)) == 3)  # sh and both sleeps
    await workspace.aclose()
    assert not process_exists(pgid)  # the shell: ended and reaped by us
    await until(lambda: not live_group_members(pgid))
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        pass  # every member reaped too
    else:
        # Orphans are reaped by PID 1, and some sandboxes' PID 1 never does: then
        # members linger as zombies, which are dead and hold nothing.
        assert group_members(pgid) and all(s == "Z" for s in group_members(pgid).values())
    with pytest.raises(WorkspaceRefused, match="closed"):
        await workspace.create_terminal("true")


async def test_cwd_is_the_root_or_inside_it(workspace: Workspace, outside: Path) -> None:
    (workspace.root / "sub").mkdir()
    terminal = await workspace.create_terminal("pwd")
    assert (await workspace.wait_for_terminal_exit(terminal)).output == f"{workspace.root}\n"
    terminal = await workspace.create_terminal("pwd", cwd="sub")
    assert (await workspace.wait_for_terminal_exit(terminal)).output == f"{workspace.root}/sub\n"
    with pytest.raises(WorkspaceRefused, match="outside the workspace") as err:
        await workspace.create_terminal("pwd", cwd=str(outside))
    refused(err, outside)
    with pytest.raises(WorkspaceRefused, match="outside the workspace"):
        await workspace.create_terminal("pwd", cwd="..")


async def test_the_environment_is_minimal_and_never_tethers_own(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-agents")
    terminal = await workspace.create_terminal("env", env={"GREETING": "hi"})
    variables = dict(
        line.split("=", 1)
        for line in (await workspace.wait_for_terminal_exit(terminal)).output.splitlines()
    )
    assert "OPENAI_API_KEY" not in variables
    assert "sk-test-not-for-agents" not in str(variables)
    assert variables["HOME"] == str(workspace.root)
    assert variables["GREETING"] == "hi"
    assert variables["PATH"] == os.environ["PATH"]


async def test_a_command_that_cannot_start_is_refused(workspace: Workspace) -> None:
    with pytest.raises(WorkspaceRefused, match="cannot start 'no-such-command-h21'"):
        await workspace.create_terminal("no-such-command-h21")


async def test_an_unknown_terminal_id_is_refused(workspace: Workspace) -> None:
    for method in (
        workspace.terminal_output,
        workspace.wait_for_terminal_exit,
        workspace.kill_terminal,
        workspace.release_terminal,
    ):
        with pytest.raises(WorkspaceRefused, match="no terminal 'term_nope'"):
            await method("term_nope")


# Policy


async def test_fs_turned_off_refuses_reads_and_writes_naming_the_setting(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "root", WorkspacePolicy(fs=False))
    (ws.root / "f.txt").write_text("x")
    with pytest.raises(WorkspaceRefused, match=r"fs/read_text_file is turned off .*fs = false"):
        await ws.read_text_file("f.txt")
    with pytest.raises(WorkspaceRefused, match=r"fs/write_text_file is turned off .*fs = false"):
        await ws.write_text_file("f.txt", "y")
    assert (ws.root / "f.txt").read_text() == "x"
    terminal = await ws.create_terminal("true")  # terminals are another switch
    assert (await ws.wait_for_terminal_exit(terminal)).exit_code == 0
    await ws.aclose()


async def test_terminal_turned_off_refuses_every_terminal_method(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "root", WorkspacePolicy(terminal=False))
    with pytest.raises(WorkspaceRefused, match=r"terminal/create is turned off .*terminal = false"):
        await ws.create_terminal("true")
    with pytest.raises(WorkspaceRefused, match=r"terminal/output is turned off"):
        await ws.terminal_output("term_any")
    await ws.write_text_file("f.txt", "still served")
    assert await ws.read_text_file("f.txt") == "still served"


# Helpers


async def output_containing(workspace: Workspace, terminal: str, text: str) -> TerminalOutput:
    """The terminal's output once ``text`` is in it (ACP has no output event to await:
    an agent polls terminal/output too)."""
    deadline = asyncio.get_running_loop().time() + 10
    while text not in (result := await workspace.terminal_output(terminal)).output:
        assert asyncio.get_running_loop().time() < deadline, result
        await asyncio.sleep(0.01)
    return result


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition()``: the processes of a group other than our child can be
    observed, not awaited."""
    deadline = asyncio.get_running_loop().time() + 10
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


def group_members(pgid: int) -> dict[int, str]:
    """Every process in the group, with its state letter, from /proc."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid:
            members[int(entry.name)] = state
    return members


def process_exists(pid: int) -> bool:
    """Whether the process exists, a zombie included (a reaped one does not)."""
    return Path(f"/proc/{pid}").exists()


def live_group_members(pgid: int) -> list[int]:
    return [pid for pid, state in group_members(pgid).items() if state != "Z"]
