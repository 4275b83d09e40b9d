"""The training program: set up, train one epoch at a time, validate, checkpoint.

Read top to bottom. ``train`` picks and locks the run; ``setup`` builds all
that the epochs share into a ``TrainState`` (the recipe, the data, the
network and its optimiser, the objective, the sampler and loader, the
schedule); ``fit`` runs the epochs (``train_one_epoch``, then
``end_epoch``: validation, history, checkpoints) until the recipe or the
time budget says stop; ``save`` writes a checkpoint. Rank 0 alone writes;
with torchrun every rank trains its share of each epoch's batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pbn_cli.core import distributed, locking
from pbn_cli.core.atomic import write_text
from pbn_cli.core.device import select_device
from pbn_cli.core.distributed import Dist
from pbn_cli.core.errors import InputError, LockedError, PbnError
from pbn_cli.core.manifest import Record, write_manifest
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import Run
from pbn_cli.core.tracking import Tracker, open_tracker
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.model import checkpoint
from pbn_cli.answers import metrics
from pbn_cli.networks.embedder import Embedder
from pbn_cli.networks.losses import ArtistLoss
from pbn_cli.model.paintings import copy_means, embed_paintings
from pbn_cli.networks.recipe import TrainConfig, resumed
from pbn_cli.networks.views import views_per_painting
from pbn_cli.training.batches import FeatureLoader, Loader, Sampler, make_sampler
from pbn_cli.training.curves import training_curves
from pbn_cli.training.features import cached_features, embed_cached
from pbn_cli.training.objective import Objective, TrainingNet, set_train_mode, uses_artist_loss
from pbn_cli.training.schedule import Planner, Schedule
from pbn_cli.training.session import Cursor, epoch_line, pick_run, stop_on_ctrl_c

CENTRE_PAINTINGS = 256  # training paintings whose mean centres the untouched copy's features


@dataclass
class TrainSummary:
    """What a training run did: its name, epochs and steps, the best validation triplet accuracy, why it stopped,
    one history row per epoch, the recipe it trained with and its folder (runs/<run>)."""

    run: str
    epochs: int
    steps: int  # optimiser steps taken in all
    best: float
    stopped: str
    history: pd.DataFrame
    config: TrainConfig | None = None
    folder: Path | None = None

    def to_dict(self) -> dict:
        """Plain data: the history as one dict per epoch, the recipe as stored; no validation yet: best is None."""
        return {"run": self.run, "epochs": self.epochs, "steps": self.steps,
                "best": self.best if math.isfinite(self.best) else None, "stopped": self.stopped,
                "history": self.history.to_dict("records"), "config": self.config.to_dict() if self.config else None,
                "folder": str(self.folder) if self.folder else None}


@dataclass
class TrainState:
    """What the epochs share: built by ``setup``, advanced by ``fit``."""

    ws: Workspace
    run: Run
    config: TrainConfig
    device: torch.device
    dist: Dist
    data: CacheData
    train_rows: SplitRows
    val_rows: SplitRows
    network: Embedder
    net: TrainingNet  # the network and its artist classifier: what the optimiser trains
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    schedule: Schedule
    cursor: Cursor
    progress: Progress = SILENT
    objective: Objective | None = None
    loader: Loader | FeatureLoader | None = None
    val_features: torch.Tensor | None = None  # --freeze-backbone: the val paintings' cached features
    val_copy: np.ndarray | None = None  # --keep-pretrained: the copy's mean features of the val paintings (stored)
    planner: Planner | None = None
    fresh: bool = True  # a new run, not a resumed one
    epoch: int = 0  # epochs finished
    best: float = -math.inf
    history: list = field(default_factory=list)
    aug_state: torch.Tensor | None = None  # a resumed epoch's augmentation generator
    tracker: Tracker = field(default_factory=Tracker)  # TensorBoard when installed (rank 0)

    @property
    def steps(self) -> int:
        """Optimiser steps taken since the run began."""
        return self.epoch * self.schedule.steps_per_epoch + self.cursor.step


def train(ws: Workspace, config: TrainConfig, *, run_name: str | None = None, resume: bool = False,
          progress: Progress = SILENT, changes: dict | None = None) -> TrainSummary:
    """Train ``config`` into a new run (or continue ``run_name`` with ``resume``).

    ``changes`` are the options the user gave; with ``resume`` they must
    agree with the run's recipe, but for those it may change (networks/recipe.py)."""
    dist, device = distributed.setup(select_device(config.device))
    try:
        run = _agree_on_run(ws, config, run_name, resume, dist)
        fresh = dist.primary and not run.folder.exists()
        lock = locking.hold(run.lock, f"run {run.name}") if dist.primary else contextlib.nullcontext()
        try:
            with lock, stop_on_ctrl_c(progress) as cursor:
                state = setup(ws, config, run, resume=resume, device=device, dist=dist, progress=progress,
                              cursor=cursor, changes=changes or {})
                state.tracker = open_tracker(run.tensorboard, dist.primary)
                try:
                    stopped = fit(state)
                finally:
                    state.tracker.close()
                return TrainSummary(run.name, state.epoch, state.steps, state.best, stopped,
                                    pd.DataFrame(state.history), state.config, run.folder)
        except BaseException:
            if fresh and not run.last.exists():  # failed before its first checkpoint: leave no empty run behind
                shutil.rmtree(run.folder, ignore_errors=True)
            raise
    finally:
        distributed.teardown(dist)


def _agree_on_run(ws: Workspace, config: TrainConfig, name: str | None, resume: bool, dist: Dist) -> Run:
    """The run rank 0 picks, on every rank (its refusal too)."""
    picked: tuple[str, str] = ("", "")
    if dist.primary:
        try:
            picked = ("ok", pick_run(ws, config, name, resume).name)
        except InputError as err:
            picked = ("error", str(err))
        except PbnError as err:  # another process holds the run
            picked = ("locked", str(err))
    status, value = distributed.broadcast_object(dist, picked)
    if status == "error":
        raise InputError(value)
    if status == "locked":
        raise LockedError(value)
    return Run(ws.runs / value)


# ------------------------------------------------------------------------------------------------------------ setup
def setup(ws: Workspace, config: TrainConfig, run: Run, *, resume: bool, device: torch.device, dist: Dist = Dist(),
          progress: Progress = SILENT, cursor: Cursor | None = None, changes: dict | None = None) -> TrainState:
    """Everything the epochs need: the recipe (the run's own when resuming), data, network, optimiser, schedule."""
    stored = checkpoint.load(run.last) if resume else None
    if stored is not None:
        config = resumed(run.name, TrainConfig.from_dict(stored["config"]), changes or {})
    config.device = str(device)
    torch.manual_seed(config.seed + dist.rank)
    data, train_rows, val_rows = _data(ws, config, stored, run)
    network = _network(config, fresh=stored is None).to(device)
    classes = np.unique(train_rows.labels)
    artist_loss = (ArtistLoss(network.dim, len(classes), config.class_scale, config.class_margin).to(device)
                   if uses_artist_loss(config) else None)
    net = TrainingNet(network, artist_loss, config.freeze_backbone)
    sampler = make_sampler(config.sampler, train_rows.labels, config.mode, config.batch_size, config.seed,
                           config.paintings_per_artist)
    planned = stored.get("planned_epochs") if stored is not None and config.max_minutes else None
    schedule = Schedule(config, len(sampler.epoch(0, dist.rank, dist.world)), planned)
    state = TrainState(ws, run, config, device, dist, data, train_rows, val_rows, network, net, _optimizer(config, net),
                       sampler, schedule, cursor or Cursor(), progress, fresh=stored is None)
    if stored is not None:
        _restore(state, stored)
    if network.kept is not None:
        _copy_features(state)
    state.objective = Objective(config, _distribute(net, config, dist, device), net, classes, device)
    if dist.primary:
        run.folder.mkdir(parents=True, exist_ok=True)
        write_text(run.config, json.dumps({**config.to_dict(), "run": run.name, "data": data.fingerprints}, indent=2))
    state.loader = _loader(state)
    return state


def _data(ws: Workspace, config: TrainConfig, stored: dict | None, run: Run) -> tuple[CacheData, SplitRows, SplitRows]:
    data = CacheData(ws)
    if stored is not None:
        checkpoint.check_cache(stored, data.size, run.name)
    if config.model.view != "resize" and config.model.input_size > data.size:
        raise InputError(f"--input-size {config.model.input_size} is larger than the cache's {data.size} px")
    train_rows = data.split("train")
    if len(train_rows) < 2:
        raise InputError("the train split has fewer than two paintings; run `pbn split` on more data")
    return data, train_rows, data.split("val")


def _network(config: TrainConfig, fresh: bool) -> Embedder:
    """The network to train: pretrained weights loaded when the run is new (a resumed one gets its own)."""
    network = Embedder(config.model, load_pretrained=fresh)
    if config.freeze_backbone:
        if isinstance(network.head, torch.nn.Identity):
            raise InputError(f"--freeze-backbone trains the head alone: give --embedding-dim (below the backbone's "
                             f"{network.feature_dim} features) so there is a head to train")
        network.backbone.requires_grad_(False)
    return network


def _optimizer(config: TrainConfig, net: TrainingNet) -> torch.optim.Optimizer:
    """AdamW (or Adam) over two groups: the head and classifier at --lr, the backbone at --lr x --backbone-lr-scale."""
    backbone = [p for p in net.model.backbone.parameters() if p.requires_grad]
    rest = [p for name, p in net.named_parameters() if p.requires_grad and not name.startswith("model.backbone.")]
    groups = [{"params": rest, "base_lr": config.lr}] if rest else []
    if backbone:
        groups.append({"params": backbone, "base_lr": config.lr * config.backbone_lr_scale})
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def _restore(state: TrainState, stored: dict) -> None:
    """Continue from a checkpoint: weights, optimiser, history and, mid-epoch, the cursor and generator."""
    state.network.load_state_dict(stored["model"])
    if state.net.artist_loss is not None:
        state.net.artist_loss.load_state_dict(stored["artist_loss"])
    state.optimizer.load_state_dict(stored["optimizer"])
    state.epoch, state.best, state.history = stored["epoch"], stored["best"], list(stored["history"])
    state.cursor.step, state.cursor.loss_sum, state.cursor.images = stored["step"], stored["loss_sum"], stored["images"]
    state.aug_state = state.cursor.aug_rng = stored.get("aug_rng")
    state.progress.message(f"resuming run {state.run.name} at epoch {state.epoch + 1}"
                           + (f", step {state.cursor.step}" if state.cursor.step else ""))


def _copy_features(state: TrainState) -> None:
    """--keep-pretrained: the copy's mean features, from the store (embedded once per workspace and weights):
    for a new run, its centre over up to 256 training paintings; for validation, the val paintings'."""
    rows, network = state.train_rows, state.network
    if state.fresh:
        pick = np.unique(np.linspace(0, len(rows) - 1, min(CENTRE_PAINTINGS, len(rows))).round().astype(int))
        means = copy_means(state.ws, network, state.data, rows[pick], state.device, progress=state.progress,
                           dist=state.dist)
        network.kept_center.copy_(torch.from_numpy(means.mean(0, dtype=np.float64)).float())
    if state.dist.primary and len(state.val_rows):
        state.val_copy = copy_means(state.ws, network, state.data, state.val_rows, state.device, progress=state.progress)
    state.progress.start(0, description="train", unit="steps")


def _distribute(net: TrainingNet, config: TrainConfig, dist: Dist, device: torch.device) -> torch.nn.Module:
    """The module a step calls: DDP under torchrun, compiled with --compile."""
    if dist.active:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if config.compile else net


def _loader(state: TrainState) -> Loader | FeatureLoader:
    """Batches of cached images; with --freeze-backbone, of cached backbone features (computed once per run)."""
    if not state.config.freeze_backbone:
        return Loader(state.data, state.train_rows.rows, state.device)
    features = [cached_features(state.run, state.network, state.data, rows, split, split == "train", state.device,
                                state.progress) for split, rows in (("train", state.train_rows), ("val", state.val_rows))]
    state.val_features = features[1]
    state.progress.start(0, description="train", unit="steps")
    return FeatureLoader(features[0], state.device)


# -------------------------------------------------------------------------------------------------------------- fit
def fit(state: TrainState) -> str:
    """Train until the planned epochs are done (or the budget is spent); why it stopped, in words."""
    c = state.config
    val_seconds = measure_start(state) if state.fresh and c.model.pretrained_weights and state.dist.primary else None
    state.planner = _planner(state, val_seconds)
    state.progress.start(state.planner.bar_total())
    try:
        while state.epoch < state.schedule.planned_epochs:
            loss, images, started = _run_epoch(state)
            end_epoch(state, loss, images, time.monotonic() - started)
            # every rank plans from rank 0's figures, so all stop after the same epoch
            seconds, elapsed = distributed.broadcast_object(state.dist, (time.monotonic() - started,
                                                                         state.planner.elapsed()))
            if state.planner.epoch_done(state.epoch, seconds, elapsed):
                state.progress.start(state.planner.bar_total())
            distributed.barrier(state.dist)
            if c.max_minutes and elapsed / 60 > c.max_minutes and state.epoch < state.schedule.planned_epochs:
                return f"time budget of {c.max_minutes:g} minutes reached after epoch {state.epoch}"
    except KeyboardInterrupt:
        if state.dist.primary and state.cursor.step > 0:
            save(state, state.run.last)
        raise PbnError(f"interrupted; run {state.run.name} saved at epoch {state.epoch + 1}, step {state.cursor.step}: "
                       f"continue with `pbn train --run {state.run.name} --resume`") from None
    if c.max_minutes and state.schedule.planned_epochs < c.epochs:
        return f"{state.schedule.planned_epochs} epochs planned to fit the {c.max_minutes:g}-minute budget"
    return "finished"


def measure_start(state: TrainState) -> float:
    """A pretrained run's network before any training: validated, saved as `start` (and `best`); seconds taken."""
    t0 = time.monotonic()
    row = {"epoch": 0, "train_loss": float("nan"), **validate(state), "lr": 0.0, "images_per_s": float("nan")}
    row["seconds"] = time.monotonic() - t0
    state.history.append(row)
    _track_epoch(state, row)
    if not math.isnan(row["val_triplet_accuracy"]):
        state.best = row["val_triplet_accuracy"]
    save(state, state.run.start)
    save(state, state.run.best)
    state.progress.message(f"before training: val triplet acc {row['val_triplet_accuracy']:.3f}, val AUC "
                           f"{row['val_pair_auc']:.3f} (the pretrained network; `--checkpoint start`)")
    return row["seconds"]


def _planner(state: TrainState, val_seconds: float | None) -> Planner:
    c, data = state.config, state.data
    val_views = len(state.val_rows) * views_per_painting(data.size, c.model.input_size, c.model.view)
    return Planner(state.schedule, c.max_minutes, c.epochs, state.steps, val_seconds, val_views, c.images_per_step,
                   share=lambda value: distributed.broadcast_object(state.dist, value))


def _run_epoch(state: TrainState) -> tuple[float, int, float]:
    """One epoch's training steps: (mean loss, images, when it started)."""
    dist = state.dist
    batches = state.sampler.epoch(state.epoch, dist.rank, dist.world)
    generator = torch.Generator().manual_seed(((state.config.seed * 1_000_003 + state.epoch) * 101 + dist.rank) % 2**63)
    if state.aug_state is not None:
        generator.set_state(state.aug_state)
        state.aug_state = None
    started = time.monotonic()
    try:
        loss, images = train_one_epoch(state, batches, generator)
    except FloatingPointError as where:
        good = f"{state.run.last} (after epoch {state.epoch})" if state.run.last.exists() else "none was written yet"
        raise PbnError(f"the training loss became NaN or infinite at epoch {state.epoch + 1}, {where}; stopped. The "
                       f"last good checkpoint is kept: {good}. Try a lower --lr") from None
    return loss, images, started


def train_one_epoch(state: TrainState, batches: list, generator: torch.Generator) -> tuple[float, int]:
    """Train on ``batches`` from the cursor's step; (mean loss, images). The cursor follows every step."""
    c, cursor, progress = state.config, state.cursor, state.progress
    set_train_mode(state.net, c)
    total = torch.as_tensor(cursor.loss_sum, dtype=torch.float64, device=state.device)
    shown = cursor.step
    for step, (batch, x) in enumerate(state.loader(batches[cursor.step:]), start=cursor.step):
        state.schedule.apply(state.optimizer, state.epoch * state.schedule.steps_per_epoch + step)
        loss = state.objective(batch, x, generator)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total += loss.detach()
        cursor.step, cursor.images, cursor.aug_rng = step + 1, cursor.images + len(batch.images), generator.get_state()
        if state.planner is not None and state.planner.step_done(state.epoch, step + 1):
            progress.start(state.planner.bar_total())
        if (step + 1) % c.log_every == 0 or step + 1 == len(batches) or cursor.stop:
            cursor.loss_sum = total.item()  # the only host sync: every log_every steps
            if not math.isfinite(cursor.loss_sum):
                raise FloatingPointError(f"step {step + 1}")
            state.tracker.scalars({"train/loss": cursor.loss_sum / (step + 1),
                                   **{f"lr/group{g}": group["lr"] for g, group in enumerate(state.optimizer.param_groups)}},
                                  state.epoch * state.schedule.steps_per_epoch + step + 1)
            progress.advance(step + 1 - shown)
            progress.info(f"loss {cursor.loss_sum / (step + 1):.4f}")
            shown = step + 1
        if cursor.stop:
            raise KeyboardInterrupt
    mean = total.item() / max(len(batches), 1)
    if not math.isfinite(mean):
        raise FloatingPointError("the end of the epoch")
    return mean, cursor.images


def end_epoch(state: TrainState, loss: float, images: int, seconds: float) -> None:
    """An epoch is done: on rank 0, validate, record it, checkpoint (`last`, and `best` when val improved)."""
    lr = state.optimizer.param_groups[0]["lr"]
    state.epoch += 1
    state.cursor.restart()
    if not state.dist.primary:
        return
    row = {"epoch": state.epoch, "train_loss": loss, **validate(state), "lr": lr,
           "images_per_s": images * state.dist.world / seconds, "seconds": seconds}
    state.history.append(row)
    _track_epoch(state, row)
    metric = row["val_triplet_accuracy"]
    improved = math.isnan(metric) or metric > state.best
    state.best = metric if improved and not math.isnan(metric) else state.best
    save(state, state.run.last)
    if improved:
        save(state, state.run.best)
    frame = pd.DataFrame(state.history)
    write_manifest(state.run.history, frame, Record("history", {"run": state.run.name}))
    training_curves(frame, state.run.curves, state.run.name)
    state.progress.message(epoch_line(row))


def _track_epoch(state: TrainState, row: dict) -> None:
    """An epoch's figures in TensorBoard, at the step it ended on (epoch 0: the pretrained network)."""
    state.tracker.scalars({"val/triplet_accuracy": row["val_triplet_accuracy"], "val/pair_auc": row["val_pair_auc"],
                           "epoch/train_loss": row["train_loss"], "epoch/images_per_s": row["images_per_s"],
                           "epoch/seconds": row.get("seconds", float("nan")), "epoch/lr": row["lr"]},
                          row["epoch"] * state.schedule.steps_per_epoch)


def validate(state: TrainState) -> dict:
    """Triplet accuracy and pair AUC on the val paintings (docs/metrics.md), seeded."""
    rows, c = state.val_rows, state.config
    if len(rows) < 3 or len(np.unique(rows.labels)) < 2:
        return {"val_triplet_accuracy": float("nan"), "val_pair_auc": float("nan")}
    if state.val_features is not None:
        emb = embed_cached(state.network, state.val_features, state.device)
    else:
        emb = embed_paintings(state.network, state.data, rows, state.device, copy=state.val_copy)
    triplets = metrics.sample_triplets(rows.labels, c.val_triplets, c.seed)
    auc, _, _ = metrics.pair_auc(emb, rows.labels, c.seed)
    return {"val_triplet_accuracy": metrics.triplet_accuracy(emb, triplets), "val_pair_auc": auc}


def save(state: TrainState, path) -> None:
    """A checkpoint of the run as it stands (mid-epoch: with the cursor and the generator's state)."""
    cursor = state.cursor
    checkpoint.save(path, {
        "config": state.config.to_dict(), "model": state.network.state_dict(), "optimizer": state.optimizer.state_dict(),
        "artist_loss": state.net.artist_loss.state_dict() if state.net.artist_loss is not None else {},
        "planned_epochs": state.schedule.planned_epochs, "epoch": state.epoch, "step": cursor.step, "best": state.best,
        "history": state.history, "aug_rng": cursor.aug_rng, "loss_sum": cursor.loss_sum, "images": cursor.images,
        "run": state.run.name, "cache_size": state.data.size,
    })
