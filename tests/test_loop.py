"""The training program's steps, each called alone: setup, train_one_epoch, the objective, the planner, save; and
what --resume may and may not change, named by the flags a person types."""

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.errors import InputError
from pbn_cli.core.options import declared, flag_of
from pbn_cli.core.runs import Run
from pbn_cli.core.workspace import Workspace
from pbn_cli.model import checkpoint
from pbn_cli.networks.recipe import TrainConfig, given_fields, resumed
from pbn_cli.training.loop import end_epoch, save, setup, train_one_epoch, validate
from pbn_cli.training.presets import resolve
from pbn_cli.training.schedule import Planner, Schedule

TINY = {"input_size": 32, "embedding_dim": 16, "batch_size": 16, "device": "cpu", "epochs": 2}


def _state(ws_root, name="steps", **over):
    config = resolve("quick", "triplet", {**TINY, **over})
    ws = Workspace(ws_root)
    return setup(ws, config, Run(ws.runs / name), resume=False, device=torch.device("cpu"))


def test_setup_builds_what_an_epoch_needs(workspace_copy):
    state = _state(workspace_copy)
    assert state.epoch == 0 and state.steps == 0 and state.fresh
    assert state.schedule.steps_per_epoch == len(state.sampler.epoch(0)) > 0
    assert {g["base_lr"] for g in state.optimizer.param_groups} == {state.config.lr}  # compact: backbone lr scale 1
    assert len(state.train_rows) > len(state.val_rows) > 0
    assert (Run(Workspace(workspace_copy).runs / "steps").config).exists()  # the resolved recipe, written first


def test_train_one_epoch_moves_the_weights_and_the_cursor_follows(workspace_copy):
    state = _state(workspace_copy)
    before = {k: v.clone() for k, v in state.network.state_dict().items()}
    batches = state.sampler.epoch(0)
    loss, images = train_one_epoch(state, batches, torch.Generator().manual_seed(0))
    assert math.isfinite(loss) and loss > 0
    assert images == sum(len(b.images) for b in batches)
    assert state.cursor.step == len(batches) and state.cursor.aug_rng is not None
    assert any(not torch.equal(before[k], v) for k, v in state.network.state_dict().items())
    end_epoch(state, loss, images, 1.0)
    assert state.epoch == 1 and state.cursor.step == 0 and state.steps == len(batches)
    assert len(state.history) == 1 and 0 <= state.history[0]["val_triplet_accuracy"] <= 1
    assert checkpoint.load(state.run.last)["epoch"] == 1


def test_an_epoch_stopped_half_way_finishes_as_if_never_stopped(workspace_copy):
    """The cursor of a Ctrl-C'd epoch, saved and set up again, finishes it with exactly the same loss."""
    whole = _state(workspace_copy, "whole")
    batches = whole.sampler.epoch(0)
    expected, _ = train_one_epoch(whole, batches, torch.Generator().manual_seed(5))

    cut = _state(workspace_copy, "cut")
    train_one_epoch(cut, batches[:2], torch.Generator().manual_seed(5))  # as when Ctrl-C stops it after two steps
    save(cut, cut.run.last)
    ws = Workspace(workspace_copy)
    again = setup(ws, cut.config, cut.run, resume=True, device=torch.device("cpu"))
    assert again.cursor.step == 2 and not again.fresh
    generator = torch.Generator()
    generator.set_state(again.aug_state)
    loss, _ = train_one_epoch(again, batches, generator)
    assert loss == pytest.approx(expected, rel=1e-6)


def test_the_objective_is_the_mode_loss_plus_the_artist_loss(workspace_copy):
    state = _state(workspace_copy, id_weight=1.0)
    batch = state.sampler.epoch(0)[0]
    x = torch.from_numpy(state.data.gather(state.train_rows.rows[batch.images]))
    state.net.eval()
    both = state.objective(batch, x, torch.Generator().manual_seed(1))
    state.config.id_weight = 0.0
    alone = state.objective(batch, x, torch.Generator().manual_seed(1))
    assert both.item() > alone.item() > 0


def test_the_planner_fits_epochs_into_the_budget():
    config = resolve("quick", "triplet", {**TINY, "epochs": 100, "max_minutes": 1.0})
    schedule = Schedule(config, steps_per_epoch=10)
    planner = Planner(schedule, 1.0, 100, 0, val_seconds=1.0, val_views=10, images_per_step=16, probe=2)
    planner.t_probe = 0.0
    assert planner.epoch_done(1, seconds=10.0, elapsed=10.0)  # 10 s an epoch: 6 fit in a minute
    assert schedule.planned_epochs == 6 and planner.bar_total() == 60
    assert not Planner(Schedule(config, 10), None, 100, 0, None, 10, 16).epoch_done(1, 10.0, 10.0)  # no budget


def test_validate_on_the_stored_copy_equals_embedding_it_again(workspace_copy, tmp_path):
    """--keep-pretrained: validation reads the copy's features from the store, computed once; same figures."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_efficientnet").state_dict().items()}, str(weights))
    config = resolve("cpu", "triplet", {"backbone": "timm:test_efficientnet", "weights": str(weights), "input_size": 32,
                                        "batch_size": 16, "device": "cpu"})
    ws = Workspace(workspace_copy)
    state = setup(ws, config, Run(ws.runs / "kept"), resume=False, device=torch.device("cpu"))
    stores = sorted(p.name for p in ws.embeddings.iterdir())
    assert len(stores) == 1 and stores[0].startswith("copy-")
    from_store = validate(state)
    state.val_copy = None  # as if the copy's features were computed now
    from pbn_cli.networks.embed import embed_images

    state.val_copy = embed_images(state.network, lambda i: state.data.gather(state.val_rows.rows[i]),
                                  len(state.val_rows), state.device, what=state.network.kept_means)
    assert validate(state) == pytest.approx(from_store, abs=1e-6)


def test_every_train_option_is_declared_once_on_the_recipe():
    """Flag, help and field: one declaration each (core/options.py); the command's options are made from them."""
    import typer.main

    options = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    for d in declared(TrainConfig):
        name = "margin" if d.option.shared else d.name
        assert options[name].help == d.option.help
        assert d.flag in options[name].opts
    assert flag_of(TrainConfig, "paintings_per_artist") == "--k"
    assert flag_of(TrainConfig, "triplet_margin") == "--margin"


@pytest.mark.parametrize("field, given, flag", [("paintings_per_artist", 3, "--k"), ("triplet_margin", 0.9, "--margin"),
                                               ("mode", "pair", "--mode"), ("preset", "cpu", "--preset")])
def test_resume_refuses_a_changed_recipe_naming_the_flag(field, given, flag):
    stored = resolve("quick", "triplet", TINY)
    with pytest.raises(InputError, match=f"run r was trained with {flag} .*drop {flag} {given}"):
        resumed("r", stored, {field: given})
    again = resumed("r", stored, {"epochs": 9, "max_minutes": 2.0, "device": "cpu", "compile": False,
                                  "mode": "triplet", "preset": "quick"})
    assert (again.epochs, again.max_minutes) == (9, 2.0)


def test_resume_reads_margin_as_the_runs_own_modes():
    stored = resolve("quick", "pair", TINY)  # pair margin 0.5; its triplet margin (0.2) is not what it trained with
    given = given_fields(None, {"margin": 0.5})  # --margin 0.5 without --mode: read as the default mode's
    assert resumed("r", stored, given).pair_margin == 0.5
    with pytest.raises(InputError, match="trained with --margin 0.5; .*drop --margin 0.9"):
        resumed("r", stored, given_fields(None, {"margin": 0.9}))


def test_resume_with_another_mode_or_preset_is_refused_on_the_command_line(workspace_copy):
    runner = CliRunner()
    args = ["train", "--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16",
            "--device", "cpu", "--epochs", "1", "--run", "r", "-w", str(workspace_copy)]
    assert runner.invoke(app, args).exit_code == 0
    for extra, message in ((["--mode", "pair"], "was trained with --mode triplet"),
                           (["--k", "2"], "was trained with --k 4"),
                           (["--margin", "0.7"], "was trained with --margin 0.2")):
        result = runner.invoke(app, [*args, "--resume", *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    other = runner.invoke(app, ["train", "--preset", "cpu", "--run", "r", "--resume", "-w", str(workspace_copy)])
    assert other.exit_code == 2 and "was trained with --preset quick" in other.output
    more = runner.invoke(app, [*args, "--resume", "--epochs", "2"])
    assert more.exit_code == 0, more.output


def test_images_per_step_counts_every_branch():
    assert resolve("quick", "triplet", {"sampler": "random", "batch_size": 8}).images_per_step == 24
    assert resolve("quick", "pair", {"sampler": "random", "batch_size": 8}).images_per_step == 16
    assert resolve("quick", "triplet", {"batch_size": 8}).images_per_step == 8
    assert np.isclose(TrainConfig().images_per_step, 128)  # the default preset's P x K batch
