"""train: shared weights, samplers, resume, checkpoints, distributed, learning."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData
from pbn_cli.model import checkpoint
from pbn_cli.networks.embedder import Embedder, ModelConfig
from pbn_cli.training.batches import PKSampler, RandomSampler
from pbn_cli.training.presets import resolve

TINY = ["--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16", "--device", "cpu"]


def _invoke(ws, *args, expect=0):
    result = CliRunner().invoke(app, ["train", *TINY, *map(str, args), "-w", str(ws)])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def _history(ws, run):
    return pd.read_parquet(Path(ws) / "runs" / run / "history.parquet")


def test_one_network_shared_by_all_branches():
    torch.manual_seed(0)
    model = Embedder(ModelConfig("reference", 64, 8, pretrained=False, keep_pretrained=0.0)).eval()
    a, p, n = torch.randn(3, 2, 3, 64, 64)
    together = model(torch.cat([a, p, n]))
    apart = torch.cat([model(a), model(p), model(n)])
    assert torch.allclose(together, apart, atol=1e-5)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names))
    assert model(a).norm(dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


def test_reference_backbone_shape():
    model = Embedder(ModelConfig("reference", 256, None, normalize=False, pretrained=False, keep_pretrained=0.0))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16] * 2 + [32] * 3 + [64] * 3 + [128] * 3 + [256] * 3
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0]
    assert (linear.in_features, linear.out_features) == (256 * 8 * 8, 2048)
    assert any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())


def test_samplers_use_only_train_paintings(tiny_workspace):
    data = CacheData(Workspace(tiny_workspace))
    train_rows = data.split("train")
    pk = PKSampler(train_rows.labels, "triplet", 16, seed=0, k=4)
    batches = pk.epoch(0)
    assert sum(len(b.images) for b in batches) >= len(train_rows)
    for b in batches:
        assert len(b.images) == 16
        assert (np.bincount(b.labels)[np.unique(b.labels)] == 4).all()
        assert b.images.max() < len(train_rows)
    rnd = RandomSampler(train_rows.labels, "triplet", 4, seed=0)
    cols = np.concatenate([b.images.reshape(3, -1).T for b in rnd.epoch(0)])
    assert len(cols) == len(train_rows)
    lab = train_rows.labels[cols]
    assert (lab[:, 0] == lab[:, 1]).all() and (lab[:, 0] != lab[:, 2]).all() and (cols[:, 0] != cols[:, 1]).all()
    pairs = RandomSampler(train_rows.labels, "pair", 4, seed=0).epoch(0)
    different = np.concatenate([b.different for b in pairs])
    assert 0.3 < different.mean() < 0.7
    assert [b.images.tolist() for b in pk.epoch(3)] == [b.images.tolist() for b in PKSampler(train_rows.labels, "triplet", 16, 0, 4).epoch(3)]
    full = [b.images.tolist() for b in pk.epoch(1)]
    rank0, rank1 = pk.epoch(1, 0, 2), pk.epoch(1, 1, 2)
    assert len(rank0) == len(rank1) == len(full) // 2  # equal steps on every rank
    assert [b.images.tolist() for b in rank0] == full[0 : 2 * len(rank0) : 2]
    assert [b.images.tolist() for b in rank1] == full[1 : 2 * len(rank1) : 2]


@pytest.mark.parametrize("into_epoch", [0.0, 0.55])  # right after epoch 1's checkpoint; half-way into epoch 2
def test_sigkill_then_resume_equals_uninterrupted(workspace_copy, into_epoch):
    ws = str(workspace_copy)
    base = [sys.executable, "-m", "pbn_cli", "train", *TINY, "--epochs", "3", "-w", ws]
    subprocess.run([*base, "--run", "whole"], check=True, capture_output=True)
    seconds = _history(ws, "whole")["seconds"].iloc[0] if "seconds" in _history(ws, "whole") else 1.0
    proc = subprocess.Popen([*base, "--run", "killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = workspace_copy / "runs/killed/checkpoints/last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(into_epoch * seconds)
    assert proc.poll() is None, "the run ended before the kill"
    proc.kill()
    proc.wait()
    assert checkpoint.load(last)["epoch"] < 3
    subprocess.run([sys.executable, "-m", "pbn_cli", "train", "--run", "killed", "--resume", "-w", ws], check=True, capture_output=True)
    a, b = _history(ws, "whole"), _history(ws, "killed")
    assert list(a["epoch"]) == list(b["epoch"]) == [1, 2, 3]
    assert list(a["train_loss"]) == list(b["train_loss"])
    assert list(a["val_triplet_accuracy"]) == list(b["val_triplet_accuracy"])


def test_ctrl_c_saves_mid_epoch_and_resume_matches(workspace_copy):
    ws = str(workspace_copy)
    base = [sys.executable, "-m", "pbn_cli", "train", *TINY, "--batch-size", "8", "--epochs", "3", "-w", ws]
    subprocess.run([*base, "--run", "whole"], check=True, capture_output=True)
    proc = subprocess.Popen([*base, "--run", "cut"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = workspace_copy / "runs/cut"
    deadline = time.monotonic() + 120
    while not (run / "history.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "interrupted; run cut saved at epoch 2" in err
    state = checkpoint.load(run / "checkpoints/last.pt")
    assert state["epoch"] == 1 and state["step"] > 0
    subprocess.run([*base, "--run", "cut", "--resume"], check=True, capture_output=True)
    assert list(_history(ws, "whole")["train_loss"]) == list(_history(ws, "cut")["train_loss"])


def test_outputs_and_checkpoint_is_plain_data(workspace_copy):
    _invoke(workspace_copy, "--run", "r", "--epochs", "1")
    run = workspace_copy / "runs/r"
    for name in ("config.json", "checkpoints/last.pt", "checkpoints/best.pt", "history.parquet", "curves.png"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["input_size"] == 32 and config["mode"] == "triplet"
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["config"], dict)
    hist = _history(workspace_copy, "r")
    assert {"epoch", "train_loss", "val_triplet_accuracy", "val_pair_auc", "lr", "images_per_s", "seconds"} <= set(hist.columns)


def test_train_from_python_is_the_commands_training(workspace_copy):
    """pbn_cli.api.training.train, which `pbn train` calls: the command's options by name, a plain-data summary."""
    from pbn_cli.api.training import train

    summary = train(workspace_copy, preset="quick", run="api", epochs=1, input_size=32, embedding_dim=16,
                    batch_size=16, device="cpu", margin=0.3)
    data = summary.to_dict()
    assert (data["run"], data["epochs"], data["stopped"]) == ("api", 1, "finished")
    assert json.loads(json.dumps(data)) == data and [row["epoch"] for row in data["history"]] == [1]
    stored = json.loads((workspace_copy / "runs/api/config.json").read_text())
    assert {k: v for k, v in stored.items() if k in data["config"]} == data["config"]
    assert (data["config"]["triplet_margin"], data["config"]["model"]["backbone"]) == (0.3, "compact")
    assert summary.folder == workspace_copy / "runs/api"


def test_train_from_python_refuses_an_unknown_option_in_one_line_naming_the_options(workspace_copy):
    from pbn_cli.api.training import KEYWORDS, train

    with pytest.raises(InputError) as refused:
        train(workspace_copy, preset="quick", epoch=1)
    message = str(refused.value)
    assert message.startswith("unknown train option 'epoch' (did you mean epochs?); the options are backbone, ")
    assert "\n" not in message and all(name in message for name in KEYWORDS) and "margin" in KEYWORDS
    assert not (workspace_copy / "runs").exists()


def test_existing_run_needs_resume_and_resume_needs_checkpoint(workspace_copy):
    _invoke(workspace_copy, "--run", "r", "--epochs", "1")
    again = _invoke(workspace_copy, "--run", "r", "--epochs", "1", expect=2)
    assert again.output.strip() == "Error: run r already exists; continue it with `pbn train --run r --resume` or pick another --run"
    none = _invoke(workspace_copy, "--run", "nothing", "--resume", expect=2)
    assert "Error: run nothing has no checkpoint to resume from" in none.output


def test_gpu_without_gpu_is_one_line(workspace_copy):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "200"}  # no GPU, also on a machine that has one
    result = subprocess.run([sys.executable, "-m", "pbn_cli", "train", "--preset", "quick", "--gpu", "-w", str(workspace_copy)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --gpu: no CUDA GPU is visible to PyTorch here; train on the CPU with --device cpu"
    assert not (workspace_copy / "runs").exists() or not any((workspace_copy / "runs").iterdir())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(workspace_copy):
    _invoke(workspace_copy, "--run", "r", "--epochs", "1")
    last = workspace_copy / "runs/r/checkpoints/last.pt"
    state = torch.load(last, weights_only=True)
    first_conv = next(k for k in state["model"] if k.endswith("weight") and state["model"][k].dim() == 4)
    state["model"][first_conv].fill_(float("nan"))  # weights gone bad, as after an overflow
    checkpoint.save(last, {k: v for k, v in state.items() if k != "format"})
    before = last.read_bytes()
    result = _invoke(workspace_copy, "--run", "r", "--resume", "--epochs", "2", expect=1)
    assert "the training loss became NaN or infinite at epoch 2" in result.output
    assert "The last good checkpoint is kept" in result.output and "Traceback" not in result.output
    assert last.read_bytes() == before


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": 1, "model": Payload()}))
    with pytest.raises(PbnError, match="cannot be loaded as a pbn checkpoint"):
        checkpoint.load(path)
    assert not marker.exists()


def test_pretrained_weights_load_through_torchvision(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18()
    (tmp_path / "hub/checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub/checkpoints" / weights.url.rsplit("/", 1)[1])
    model = Embedder(ModelConfig("resnet18", 64, 32, pretrained=True))
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


def test_pretrained_weights_missing_offline_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PbnError, match=r"could not load ImageNet weights for resnet18 .* put resnet18-.*\.pth in .*/hub/checkpoints"):
        Embedder(ModelConfig("resnet18", 64, 32, pretrained=True))


def test_bad_preset_and_options_are_input_errors():
    with pytest.raises(InputError, match="unknown preset"):
        resolve("nope", "triplet", {})
    with pytest.raises(InputError, match="--mode must be one of pair, triplet"):
        resolve("quick", "quadruplet", {})


def test_torchrun_two_processes_on_cpu(workspace_copy):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "pbn_cli",
           "train", *TINY, "--run-name", "ddp", "--epochs", "2", "-w", str(workspace_copy)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    hist = _history(workspace_copy, "ddp")
    assert list(hist["epoch"]) == [1, 2]
    assert not (workspace_copy / "runs/ddp/lock").read_text()  # released
