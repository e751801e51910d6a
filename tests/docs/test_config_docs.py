"""docs/configuration.md is what scripts/gen_config_docs.py makes of the code, and says so
when it drifts: an option changed, or an environment variable read and not described."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_config_docs.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_up_to_date_whatever_the_environment() -> None:
    # A deployment's own settings must not leak into the generated defaults.
    env = {**os.environ, "TETHER_DATA_DIR": "/srv/elsewhere", "TETHER_MAX_STEPS": "3"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "| `--data-dir` | .tether | `TETHER_DATA_DIR` |" in text
    assert "`TETHER_ANTHROPIC_BASE_URL`" in text and "`TETHER_URL`" in text


def test_a_changed_option_makes_the_check_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = _script()
    stale = tmp_path / "configuration.md"
    stale.write_text(
        (ROOT / "docs" / "configuration.md").read_text().replace("Interface to bind.", "Old.")
    )
    monkeypatch.setattr(gen, "TARGET", stale)
    monkeypatch.setattr(sys, "argv", ["gen_config_docs.py", "--check"])
    assert gen.main() == 1
    monkeypatch.setattr(sys, "argv", ["gen_config_docs.py"])
    assert gen.main() == 0
    assert "Interface to bind." in stale.read_text()


def _group() -> click.Group:
    @click.group()
    def cli() -> None:
        """A CLI."""

    @cli.command()
    @click.option(
        "--widgets",
        default=lambda: int(os.environ.get("TETHER_WIDGETS", 7)),
        show_default="7 (or $TETHER_WIDGETS)",
        help="How many widgets.",
    )
    def serve(widgets: int) -> None:
        """Serve."""

    return cli


def test_an_option_read_from_the_environment_documents_its_variable() -> None:
    gen = _script()
    text = gen.render(_group(), {name: {"elsewhere.py"} for name in gen.ENV_VARS})
    assert "| `--widgets` | 7 | `TETHER_WIDGETS` | How many widgets. |" in text
    assert "| `TETHER_WIDGETS` | The default of `tether serve --widgets`. |" in text


def test_a_variable_read_and_not_described_stops_the_script(tmp_path: Path) -> None:
    gen = _script()
    (tmp_path / "mod.py").write_text('import os\nos.environ.get("TETHER_SURPRISE")\n')
    reads = gen.env_reads(tmp_path, tmp_path)
    assert reads == {"TETHER_SURPRISE": {"mod.py"}}
    described = {name: {"elsewhere.py"} for name in gen.ENV_VARS}
    with pytest.raises(
        SystemExit, match=r"undescribed variable: TETHER_SURPRISE \(read in mod.py\)"
    ):
        gen.render(_group(), {**described, **reads})
