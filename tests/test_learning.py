"""Learning on unseen artists: a short CPU run in each mode clearly beats chance (fixed seed)."""

import json

import pytest
from conftest import prepared_workspace
from typer.testing import CliRunner

from pbn_cli.cli import app


@pytest.fixture(scope="module")
def learning_workspace(tmp_path_factory):
    return prepared_workspace(tmp_path_factory.mktemp("learn"), artists=30, paintings=8, seed=11, size=256)


# measured with this seed: triplet mode 0.80 triplet accuracy, pair mode 0.70 (chance: 0.5)
@pytest.mark.parametrize("mode, floor", [("triplet", 0.7), ("pair", 0.62)])
def test_short_cpu_run_beats_chance_on_unseen_artists(learning_workspace, mode, floor):
    runner = CliRunner()
    ws = str(learning_workspace)
    train = runner.invoke(app, ["train", "--preset", "quick", "--mode", mode, "--input-size", "64", "--epochs", "25",
                                "--device", "cpu", "--run", f"learn-{mode}", "-w", ws])
    assert train.exit_code == 0, train.output
    result = runner.invoke(app, ["eval", "--run", f"learn-{mode}", "--device", "cpu", "-w", ws])
    assert result.exit_code == 0, result.output
    metrics = json.loads((learning_workspace / f"runs/learn-{mode}/eval/test/metrics.json").read_text())
    assert metrics["n_artists"] >= 4
    assert metrics["triplet_accuracy"] > floor, metrics
    assert metrics["pair_auc"] > 0.6, metrics
