"""The Dockerfile and docs/deploy.md's systemd unit: well-formed, and what they run parses.

No Docker daemon is needed (``docker build`` is not run): the Dockerfile is
read instruction by instruction, which fails on one Docker does not know, and
checked for a non-root user, the data dir as a volume and no dev extras. The
unit goes through ``systemd-analyze verify`` where it is installed, else
configparser. The ``tether serve`` each one runs (arguments and ``TETHER_*``
variables) is parsed by the real command, so a renamed option breaks here.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

from helpers.server import tether_command
from tether.cli.main import main

ROOT = Path(__file__).parents[2]
#: Every instruction of the Dockerfile reference.
DOCKER_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, args = (pending + line).partition(" ")
        pending = ""
        out.append((word, args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts and starts[0] == 0, "a Dockerfile starts with FROM"
    return instructions[starts[-1] :]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def serve_params(argv: list[str], env: dict[str, str], monkeypatch: Any) -> dict[str, Any]:
    """The options ``tether ARGV`` gets with ``env`` set, as the real command parses them."""
    for name in [k for k in os.environ if k.startswith("TETHER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert argv[0] == "serve", argv
    command = main.get_command(click.Context(main), "serve")
    assert command is not None
    with command.make_context("serve", argv[1:]) as ctx:
        return dict(ctx.params)


def test_the_dockerfile_is_well_formed_non_root_with_the_data_dir_a_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instructions = dockerfile()
    unknown = {word for word, _ in instructions} - DOCKER_INSTRUCTIONS
    assert not unknown, f"not Dockerfile instructions: {unknown}"
    stage = final_stage(instructions)
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    env = env_of(stage)
    volumes = [v for word, args in stage if word == "VOLUME" for v in json.loads(args)]
    assert env["TETHER_DATA_DIR"] in volumes
    installs = [args for word, args in stage if word == "RUN" and "pip install" in args]
    assert installs and not any("[" in args for args in installs), "no extras: runtime only"

    entrypoint = json.loads(next(args for word, args in stage if word == "ENTRYPOINT"))
    cmd = json.loads(next(args for word, args in stage if word == "CMD"))
    assert entrypoint == ["tini", "--", "tether"]  # PID 1 reaps orphans, forwards signals
    assert any("install" in args and "tini" in args for word, args in stage if word == "RUN")
    params = serve_params(cmd, env, monkeypatch)
    assert params["host"] == "0.0.0.0"
    assert str(params["data_dir"]) == env["TETHER_DATA_DIR"]
    assert f"EXPOSE {params['port']}" in {f"{w} {a}" for w, a in stage}


def test_the_build_context_holds_what_the_image_copies_and_no_more() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "everything is left out first, then what the image needs let in"
    allowed = {p.removeprefix("!").rstrip("/") for p in ignore if p.startswith("!")}
    for word, args in dockerfile():
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is not in the build context"
    assert not {".venv", ".git", "tests", ".tether"} & allowed


def systemd_unit() -> str:
    [unit] = re.findall(
        r"^```ini\n(.*?)^```", (ROOT / "docs" / "deploy.md").read_text(), re.S | re.M
    )
    return unit


def test_the_systemd_unit_has_what_systemd_needs_and_its_command_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(systemd_unit())
    assert parser.sections() == ["Unit", "Service", "Install"]
    service = parser["Service"]
    for key in ("ExecStart", "User", "Restart"):
        assert service.get(key), key
    assert parser["Install"].get("WantedBy")

    program, *argv = shlex.split(service["ExecStart"])
    assert program.endswith("/bin/tether")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(program).name in scripts  # the console script `pip install` puts there
    env = dict(pair.split("=", 1) for pair in shlex.split(service["Environment"]))
    params = serve_params(argv, env, monkeypatch)
    assert params["sqlite_sync"] == "full"
    assert str(params["data_dir"]) == f"/var/lib/{service['StateDirectory']}"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """With the console script where this test's install put it (systemd checks it exists)."""
    [script] = tether_command()[:1]
    assert Path(script).name == "tether", "the console script, installed"
    unit = tmp_path / "tether.service"
    unit.write_text(systemd_unit().replace("/opt/tether/venv/bin/tether", script))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in done.stderr.splitlines() if "tether.service" in line]
    assert done.returncode == 0 and not complaints, done.stderr
