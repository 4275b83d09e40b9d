"""The command line itself: help, version, documentation of every command."""

import subprocess
import sys
from pathlib import Path

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


def test_every_train_flag_reaches_the_recipe(tmp_path):
    """Each declared option given on the command line changes the recipe stored in the run's config."""
    from pbn_cli.core.options import declared
    from pbn_cli.networks.recipe import TrainConfig
    from pbn_cli.training.presets import resolve

    given = {"backbone": "resnet18", "input_size": 48, "embedding_dim": 7, "normalize": False, "pretrained": False,
             "weights": "IMAGENET1K_V1",
             "sampler": "random", "miner": "batch-hard", "batch_size": 12, "paintings_per_artist": 3, "epochs": 2,
             "max_minutes": 1.5, "lr": 0.01, "view": "resize", "seed": 9, "device": "cpu", "compile": True,
             "id_weight": 0.5, "backbone_lr_scale": 0.2, "warmup": 0.1, "bn_eval": True, "freeze_backbone": True,
             "levels": 2, "keep_pretrained": 0.0, "triplet_margin": 0.3}
    flags = {d.name for d in declared(TrainConfig)} - {"mode", "preset", "pair_margin", "class_margin"}
    assert set(given) == flags
    config = resolve("quick", "triplet", given)
    assert {name: config.get(name) for name in flags} == given
    # the copy cannot go with a frozen backbone: given alone, it reaches the recipe too
    kept = {**given, "freeze_backbone": False, "keep_pretrained": 0.5}
    assert {name: resolve("quick", "triplet", kept).get(name) for name in flags} == kept


def test_train_takes_every_declared_option_once_by_name_with_its_fields_type():
    """cli/train.py writes each recipe option as a parameter; flag and help come from the field's declaration."""
    import inspect
    import typing

    import typer.main

    from pbn_cli.cli.train import train
    from pbn_cli.networks.recipe import OPTIONS

    fn = inspect.unwrap(train)
    hints = typing.get_type_hints(fn)
    recipe = [name for name in inspect.signature(fn).parameters if name not in ("run", "resume", "gpu", "workspace")]
    assert recipe == list(OPTIONS)  # each declared option exactly once, in the recipe's order, and nothing else
    for name in recipe:
        assert typing.get_args(hints[name]) == (OPTIONS[name].type, type(None)), name
    options = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    for name, d in OPTIONS.items():
        assert (options[name].help, options[name].opts[0], options[name].default) == (d.option.help, d.flag, None)


def test_gpu_is_one_shared_option():
    import typer.main

    commands = typer.main.get_command(app).commands
    helps = {c: next(p.help for p in commands[c].params if p.name == "gpu") for c in ("train", "eval", "predict")}
    assert len(set(helps.values())) == 1


def test_shell_completion_completes_commands_and_options():
    import os

    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_PBN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        pbn = str(Path(sys.executable).parent / "pbn")  # the installed command, as a shell calls it
        out = subprocess.run([pbn], env=env, capture_output=True, text=True)
        return out.stdout.split()

    assert complete("pbn att", 1) == ["attribute"]
    assert "--preset" in complete("pbn train --pre", 2)
    assert "--install-completion" in runner.invoke(app, ["--help"]).output
