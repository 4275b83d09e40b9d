"""Fine-tuning recipes on a pretrained backbone: the start checkpoint, artist losses, frozen features, budgets, views.

"Pretrained" here is a weights file written by the test (timm's tiny
test_efficientnet), loaded through --weights as a user's file would be.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.networks.views import grid_views, random_views, views_per_painting

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_efficientnet").state_dict().items()}, str(path))
    return path


def _train(ws, weights, *args, expect=0):
    argv = ["train", "--preset", "cpu", "--backbone", "timm:test_efficientnet", "--weights", str(weights),
            "--input-size", "32", "--batch-size", "16", "--device", "cpu", "--max-minutes", "5", *map(str, args),
            "-w", str(ws)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def _history(ws, run):
    return pd.read_parquet(Path(ws) / "runs" / run / "history.parquet")


def _state(ws, run, which):
    return torch.load(Path(ws) / "runs" / run / "checkpoints" / f"{which}.pt", weights_only=True)


def test_a_pretrained_run_is_measured_before_training_and_keeps_that_network(workspace_copy, weights):
    _train(workspace_copy, weights, "--run", "ft", "--epochs", "2", "--id-weight", "1")
    hist = _history(workspace_copy, "ft")
    assert list(hist["epoch"]) == [0, 1, 2]
    start = _state(workspace_copy, "ft", "start")
    from safetensors.torch import load_file

    published = load_file(str(weights))
    assert all(torch.equal(start["model"][f"backbone.{k}"], v) for k, v in published.items() if not k.startswith("classifier"))
    last = _state(workspace_copy, "ft", "last")
    assert any(not torch.equal(start["model"][k], last["model"][k]) for k in start["model"])
    # the classifier over the training artists is kept for --resume, never in the network eval uses
    assert "proxies" in last["artist_loss"] and not any("proxies" in k for k in last["model"])
    result = CliRunner().invoke(app, ["eval", "--run", "ft", "--checkpoint", "start", "--split", "val",
                                      "-w", str(workspace_copy)])
    assert result.exit_code == 0, result.output
    import json

    figures = json.loads((workspace_copy / "runs/ft/eval/val-start/metrics.json").read_text())
    assert figures["epoch"] == 0


def test_backbone_learns_at_its_own_rate_after_a_warm_up(workspace_copy, weights):
    _train(workspace_copy, weights, "--run", "lr", "--epochs", "2", "--lr", "0.01", "--backbone-lr-scale", "0.1",
           "--warmup", "0.9", "--embedding-dim", "8")
    opt = _state(workspace_copy, "lr", "last")["optimizer"]
    assert [g["base_lr"] for g in opt["param_groups"]] == pytest.approx([0.01, 0.001])
    hist = _history(workspace_copy, "lr")
    assert hist["lr"].iloc[1] < 0.01  # still warming up at the end of epoch 1 of 2 (0.9 of the steps)


def test_batchnorm_statistics_stay_as_pretrained_with_small_batches(workspace_copy, weights):
    _train(workspace_copy, weights, "--run", "bn", "--epochs", "1")
    start, last = _state(workspace_copy, "bn", "start")["model"], _state(workspace_copy, "bn", "last")["model"]
    running = [k for k in start if k.endswith("running_mean")]
    assert running and all(torch.equal(start[k], last[k]) for k in running)
    _train(workspace_copy, weights, "--run", "bn2", "--epochs", "1", "--bn-train")
    last = _state(workspace_copy, "bn2", "last")["model"]
    assert any(not torch.equal(start[k], last[k]) for k in running)


def test_proxy_mode_trains_on_the_artist_loss_alone(workspace_copy, weights):
    _train(workspace_copy, weights, "--run", "px", "--mode", "proxy", "--epochs", "2", "--margin", "0.2")
    hist = _history(workspace_copy, "px")
    assert hist["train_loss"].iloc[2] < hist["train_loss"].iloc[1]
    config = _state(workspace_copy, "px", "last")["config"]
    assert config["mode"] == "proxy" and config["class_margin"] == 0.2


def test_frozen_backbone_trains_the_head_on_features_computed_once(workspace_copy, weights):
    _train(workspace_copy, weights, "--run", "fz", "--freeze-backbone", "--embedding-dim", "8", "--epochs", "3")
    run = workspace_copy / "runs/fz"
    files = sorted((run / "features").glob("*.npy"))
    assert [f.name.split("-")[0] for f in files] == ["train", "val"]
    train = np.load(files[0])
    n_train = len(pd.read_parquet(workspace_copy / "manifests/split.parquet").query("split == 'train'"))
    assert train.shape[:2] == (n_train, 2 * views_per_painting(64, 32, "mixed"))  # the grid, the whole, mirrored
    start, last = _state(workspace_copy, "fz", "start")["model"], _state(workspace_copy, "fz", "last")["model"]
    assert all(torch.equal(start[k], last[k]) for k in start if k.startswith("backbone."))
    assert not torch.equal(start["head.weight"], last["head.weight"])
    stamps = [f.stat().st_mtime_ns for f in files]
    _train(workspace_copy, weights, "--run", "fz", "--resume", "--epochs", "4")
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not computed again
    result = _train(workspace_copy, weights, "--run", "fz2", "--freeze-backbone", expect=2)
    assert "--embedding-dim" in result.output


def test_a_budget_plans_the_schedule_and_ends_annealed(workspace_copy, weights):
    result = _train(workspace_copy, weights, "--run", "bud", "--epochs", "500", "--max-minutes", "0.15",
                    "--lr", "0.001")
    hist = _history(workspace_copy, "bud")
    assert "planned to fit the 0.15-minute budget" in result.output
    assert 1 <= hist["epoch"].max() < 500
    assert hist["lr"].iloc[-1] < 0.5 * 0.001  # the cosine reached its end (a 500-epoch schedule cut early: ~0.001)


def test_mixed_views_show_the_crops_and_the_whole_painting():
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    grid = grid_views(x, 32, "mixed").reshape(2, 5, 3, 32, 32)
    assert torch.equal(grid[:, :4], grid_views(x, 32, "crop").reshape(2, 4, 3, 32, 32))
    assert torch.equal(grid[:, 4], grid_views(x, 32, "resize"))
    views = random_views(x, 32, "mixed", torch.Generator().manual_seed(3))
    crops = random_views(x, 32, "crop", torch.Generator().manual_seed(3))
    assert views.shape == (2, 3, 32, 32)
    again = random_views(x, 32, "mixed", torch.Generator().manual_seed(3))
    assert torch.equal(views, again) and crops.shape == views.shape


@pytest.mark.parametrize("backbone", ["timm", "torchvision"])
def test_export_of_an_ecosystem_backbone_compares_alike_without_the_workspace(workspace_copy, tiny_workspace, weights,
                                                                               tmp_path, monkeypatch, backbone):
    import json

    runner = CliRunner()
    ws = str(workspace_copy)
    if backbone == "timm":
        _train(workspace_copy, weights, "--run", "e", "--epochs", "1", "--levels", "2")  # and the levels travel
    else:
        result = runner.invoke(app, ["train", "--preset", "quick", "--backbone", "resnet18", "--input-size", "32",
                                     "--batch-size", "16", "--epochs", "1", "--device", "cpu", "--run", "e", "-w", ws])
        assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["eval", "--run", "e", "--split", "val", "-w", ws]).exit_code == 0
    images = sorted((tiny_workspace.parent / "data").rglob("*.*"))
    a, b = (str(p) for p in [x for x in images if x.suffix.lower() in (".jpg", ".png", ".webp", ".tif", ".bmp")][:2])
    model = tmp_path / "m.pt"
    assert runner.invoke(app, ["export", "e", str(model), "-w", ws]).exit_code == 0
    with_ws = runner.invoke(app, ["compare", a, b, "--run", "e", "--json", "--device", "cpu", "-w", ws])
    assert with_ws.exit_code == 0, with_ws.output
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    alone = runner.invoke(app, ["compare", a, b, "--model", str(model), "--json", "--device", "cpu"])
    assert alone.exit_code == 0, alone.output
    assert json.loads(alone.stdout) == json.loads(with_ws.stdout)


def test_levels_add_each_stages_pooled_features_normalised_alike(weights):
    """--levels 3: the head's pooled features and the last two stages' averages, each of unit length, side by side."""
    from pbn_cli.core.errors import InputError
    from pbn_cli.networks.embedder import Embedder
    from pbn_cli.training.presets import resolve

    config = resolve("cpu", "triplet", {"backbone": "timm:test_efficientnet", "weights": str(weights), "input_size": 32,
                                        "levels": 3}).model
    net = Embedder(config).eval()
    info = net.backbone.feature_info
    assert net.feature_dim == net.backbone.num_features + info[-2]["num_chs"] + info[-1]["num_chs"]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = net.backbone_features(x)
        parts = feats.split([net.backbone.num_features, info[-2]["num_chs"], info[-1]["num_chs"]], 1)
        assert all(torch.allclose(p.norm(dim=1), torch.ones(2), atol=1e-5) for p in parts)
        # the first part is exactly the backbone's own features, normalised
        one = Embedder(resolve("cpu", "triplet", {"backbone": "timm:test_efficientnet", "weights": str(weights),
                                                  "input_size": 32, "levels": 1}).model).eval()
        assert torch.allclose(parts[0], torch.nn.functional.normalize(one.backbone_features(x), dim=1), atol=1e-5)
    with pytest.raises(InputError, match="needs a backbone with intermediate features"):
        Embedder(resolve("quick", "triplet", {"levels": 2, "backbone": "reference", "input_size": 64}).model)
    assert Embedder(resolve("quick", "triplet", {"levels": 3}).model).feature_dim == 256 + 64 + 128  # compact's
    with pytest.raises(InputError, match="at most --levels"):
        Embedder(resolve("cpu", "triplet", {"backbone": "timm:test_efficientnet", "weights": str(weights),
                                            "input_size": 32, "levels": 50}).model)


def test_keep_pretrained_adds_an_untouched_copys_centred_features_to_the_embedding(workspace_copy, weights):
    """The cpu preset keeps the pretrained network as loaded beside the fine-tuned one: its weights and BatchNorm
    statistics never move (even with --bn-train), its centre is the mean over training paintings' grid views, and
    the embedding is [fine-tuned, w x centred copy], normalised."""
    from safetensors.torch import load_file

    from pbn_cli.data.cache import CacheData
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.networks.embedder import Embedder
    from pbn_cli.networks.recipe import TrainConfig

    _train(workspace_copy, weights, "--run", "kp", "--epochs", "1", "--bn-train", "--keep-pretrained", "0.5")
    start, last = _state(workspace_copy, "kp", "start"), _state(workspace_copy, "kp", "last")
    published = load_file(str(weights))
    kept = {k[len("kept."):]: v for k, v in last["model"].items() if k.startswith("kept.")}
    assert kept and all(torch.equal(kept[k], v) for k, v in published.items() if k in kept)
    running = [k for k in kept if k.endswith("running_mean")]
    assert running and all(torch.equal(kept[k], start["model"][f"kept.{k}"]) for k in running)
    assert any(not torch.equal(last["model"][f"backbone.{k}"], kept[k]) for k in running)  # --bn-train moved those

    config = TrainConfig.from_dict(last["config"])
    assert config.model.keep_pretrained == 0.5
    net = Embedder(config.model, load_pretrained=False)
    net.load_state_dict(last["model"])
    net.eval()
    data = CacheData(Workspace(workspace_copy))
    rows = data.split("train")
    x = grid_views(torch.from_numpy(data.gather(rows.rows)), 32, "mixed")
    with torch.no_grad():
        copy_feats = net.backbone_features(x, net.kept)
        assert torch.allclose(net.kept_center, copy_feats.mean(0), atol=1e-5)  # fewer than 256 paintings: all
        norm = torch.nn.functional.normalize
        tuned = norm(net.head(net.backbone_features(x)), dim=1)
        expected = norm(torch.cat([tuned, 0.5 * norm(copy_feats - net.kept_center, dim=1)], 1), dim=1)
        assert torch.allclose(net(x), expected, atol=1e-5)
        assert net(x).shape[1] == net.dim + net.feature_dim

    _train(workspace_copy, weights, "--run", "kp0", "--epochs", "1", "--keep-pretrained", "0")
    assert not any(k.startswith("kept") for k in _state(workspace_copy, "kp0", "last")["model"])


def test_keep_pretrained_needs_weights_and_a_backbone_that_trains(workspace_copy, weights):
    from pbn_cli.training.presets import resolve

    # the preset's copy steps aside when it cannot apply; asked for explicitly, it is one line
    assert resolve("cpu", "triplet", {"backbone": "compact", "pretrained": False}).model.keep_pretrained == 0
    assert resolve("cpu", "triplet", {"backbone": "timm:test_efficientnet", "weights": str(weights),
                                      "freeze_backbone": True, "embedding_dim": 8}).model.keep_pretrained == 0
    for extra, message in [(["--freeze-backbone", "--embedding-dim", "8", "--keep-pretrained", "1"], "untouched already"),
                           (["--keep-pretrained", "-1"], "must be >= 0")]:
        result = _train(workspace_copy, weights, "--run", "bad", *extra, expect=2)
        assert message in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "--preset", "quick", "--keep-pretrained", "1", "-w", str(workspace_copy)])
    assert result.exit_code == 2 and "--pretrained or --weights" in result.output


def test_the_default_preset_is_the_recipes_defaults_and_the_others_change_them():
    """One source per value: a preset names only what it changes from the dataclass defaults."""
    from dataclasses import asdict

    from pbn_cli.networks.recipe import TrainConfig
    from pbn_cli.training.presets import PRESETS, resolve

    assert PRESETS["default"] == {} and asdict(resolve("default", "triplet", {})) == asdict(TrainConfig())
    assert resolve(None, None, {}) == TrainConfig()
    for name, changes in PRESETS.items():
        assert all(TrainConfig().get(field) != value for field, value in changes.items()), name
        assert resolve(name, "pair", {"epochs": 3}).epochs == 3
    assert resolve("quick", "triplet", {}).model.keep_pretrained == 0  # a copy needs pretrained weights
    assert PRESETS["reference"]["milestones"] is not resolve("reference", "pair", {}).milestones


def test_a_stored_recipe_reads_a_field_it_predates_as_off():
    """Checkpoints written before a field existed keep their meaning, though the defaults are the default preset's."""
    from pbn_cli.core.errors import InputError
    from pbn_cli.networks.recipe import ABSENT, TrainConfig

    stored = TrainConfig().to_dict()
    old = {k: v for k, v in stored.items() if k not in ABSENT}
    old["model"] = {k: v for k, v in stored["model"].items() if k not in ABSENT}
    config = TrainConfig.from_dict(old)
    assert {name: config.get(name) for name in ABSENT} == ABSENT
    assert TrainConfig.from_dict(stored) == TrainConfig()
    with pytest.raises(InputError, match="unknown recipe field 'nope'"):
        config.set("nope", 1)
