"""The command line itself: help, version, documentation of every command."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pbn_cli.cli import app

runner = CliRunner()


def test_help_lists_the_pipeline_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("ingest", "clean", "split", "resize", "synth", "status"):
        assert name in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("pbn ")


@pytest.mark.parametrize("name", sorted(c.name or c.callback.__name__ for c in app.registered_commands))
def test_every_command_has_a_summary_and_an_example(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0
    assert "Example: pbn " in result.output


def test_help_does_not_import_torch_or_pandas():
    code = "import sys; from pbn_cli.cli import app; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "pbn_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("pbn ")
