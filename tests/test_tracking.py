"""Training watched in TensorBoard: scalars per step and per epoch, read back with TensorBoard's own reader, and the
projector's files written by eval."""

import shutil

import pandas as pd
from typer.testing import CliRunner

from pbn_cli.cli import app

runner = CliRunner()


def test_scalars_and_projector_in_tensorboard(tmp_path, tiny_workspace):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ws = tmp_path / "ws"
    shutil.copytree(tiny_workspace, ws)
    args = ["train", "--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16",
            "--epochs", "2", "--device", "cpu", "--run", "tb", "-w", str(ws)]
    assert runner.invoke(app, args).exit_code == 0
    events = EventAccumulator(str(ws / "runs/tb/tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "lr/group0", "val/triplet_accuracy", "val/pair_auc", "epoch/images_per_s"} <= set(tags)
    history = pd.read_parquet(ws / "runs/tb/history.parquet")
    val = [e.value for e in events.Scalars("val/triplet_accuracy")]
    assert val == list(history["val_triplet_accuracy"].astype("float32"))
    losses = events.Scalars("train/loss")
    assert len(losses) >= 2 and [e.step for e in losses] == sorted(e.step for e in losses)
    assert runner.invoke(app, ["eval", "--run", "tb", "--device", "cpu", "-w", str(ws)]).exit_code == 0
    board = ws / "runs/tb/tensorboard"
    assert "test-best" in (board / "projector_config.pbtxt").read_text()
    (meta,) = board.glob("*/test-best/metadata.tsv")
    n_test = int((pd.read_parquet(ws / "manifests/split.parquet")["split"] == "test").sum())
    assert len(meta.read_text().splitlines()) == n_test
    assert (meta.parent / "sprite.png").exists() and (meta.parent / "tensors.tsv").exists()
    shown = runner.invoke(app, ["runs", "-w", str(ws)])
    assert "tensorboard --logdir" in shown.stdout
