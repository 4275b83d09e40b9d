"""The training program: set up, train one epoch at a time, validate, checkpoint.

Read top to bottom: ``train`` prepares the run (device, data, model,
optimizer, resume), then loops over epochs calling ``train_one_epoch`` and
``validate``. Rank 0 alone writes; with torchrun every rank trains its
share of each epoch's batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pbn_cli.core import locking
from pbn_cli.core.atomic import write_text
from pbn_cli.core.device import select_device
from pbn_cli.core.errors import InputError, LockedError, PbnError
from pbn_cli.core.manifest import Record, write_manifest
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import Run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.model import checkpoint, metrics
from pbn_cli.model.embed import embed_images
from pbn_cli.model.embedder import Embedder
from pbn_cli.model.losses import ArtistLoss
from pbn_cli.model.recipe import TrainConfig
from pbn_cli.model.views import views_per_painting
from pbn_cli.training import distributed
from pbn_cli.training import features as frozen
from pbn_cli.training.batches import FeatureLoader, Loader, make_sampler
from pbn_cli.training.objective import Objective, TrainingNet, set_train_mode, uses_artist_loss
from pbn_cli.training.schedule import Planner, Schedule
from pbn_cli.training.curves import training_curves
from pbn_cli.training.session import (
    check_unchanged,
    epoch_line,
    pick_run,
    stop_on_ctrl_c,
)


@dataclass
class Summary:
    run: str
    epochs: int
    best: float
    stopped: str
    history: pd.DataFrame


def validate(model, data: CacheData, rows: SplitRows, config: TrainConfig, device, features=None) -> dict:
    """Triplet accuracy and pair AUC on ``rows`` (docs/metrics.md), seeded; from cached ``features`` if given."""
    if len(rows) < 3 or len(np.unique(rows.labels)) < 2:
        return {"val_triplet_accuracy": float("nan"), "val_pair_auc": float("nan")}
    if features is not None:
        emb = frozen.embed_cached(model, features, device)
    else:
        emb = embed_images(
            model, lambda idx: data.gather(rows.rows[idx]), len(rows), config.model.input_size,
            config.view, config.model.normalize, device,
        )
    triplets = metrics.sample_triplets(rows.labels, config.val_triplets, config.seed)
    auc, _, _ = metrics.pair_auc(emb, rows.labels, config.seed)
    return {"val_triplet_accuracy": metrics.triplet_accuracy(emb, triplets), "val_pair_auc": auc}


def _aug_generator(config: TrainConfig, epoch: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((config.seed * 1_000_003 + epoch) * 101 + rank) % (2**63))


def train_one_epoch(objective: Objective, optimizer, loader, batches, config, device, generator, progress, position,
                    schedule: Schedule, planner: Planner, epoch: int):
    """Train on ``batches`` from ``position["step"]``; returns (mean loss, images).

    ``position`` carries the step reached, the loss summed so far and the
    augmentation generator's state, so an interrupted epoch can be saved and
    finished later with exactly the same result.
    """
    set_train_mode(objective.training_net, config)
    start = position.get("step", 0)
    total = torch.as_tensor(position.get("loss_sum", 0.0), dtype=torch.float64, device=device)
    images = position.get("images", 0)
    shown = start
    for step, (batch, x) in enumerate(loader(batches[start:]), start=start):
        schedule.apply(optimizer, epoch * schedule.steps_per_epoch + step)
        loss = objective(batch, x, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        images += len(batch.images)
        position.update(step=step + 1, images=images, aug_rng=generator.get_state())
        if planner.step_done(epoch, step + 1):
            progress.start(planner.bar_total())
        if (step + 1) % config.log_every == 0 or step + 1 == len(batches) or position.get("stop"):
            position["loss_sum"] = total.item()  # the only host sync: every log_every steps
            if not math.isfinite(position["loss_sum"]):
                raise FloatingPointError(f"step {step + 1}")
            progress.advance(step + 1 - shown)
            progress.info(f"loss {position['loss_sum'] / (step + 1):.4f}")
            shown = step + 1
        if position.get("stop"):
            raise KeyboardInterrupt
    mean = total.item() / max(len(batches), 1)
    if not math.isfinite(mean):
        raise FloatingPointError("the end of the epoch")
    return mean, images


def _optimizer(config: TrainConfig, net: TrainingNet):
    """AdamW (or Adam) over two groups: the head and classifier at --lr, the backbone at --lr x --backbone-lr-scale."""
    backbone = [p for p in net.model.backbone.parameters() if p.requires_grad]
    rest = [p for name, p in net.named_parameters() if p.requires_grad and not name.startswith("model.backbone.")]
    groups = [{"params": rest, "base_lr": config.lr}] if rest else []
    if backbone:
        groups.append({"params": backbone, "base_lr": config.lr * config.backbone_lr_scale})
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def train(
    ws: Workspace,
    config: TrainConfig,
    *,
    run_name: str | None = None,
    resume: bool = False,
    progress: Progress = SILENT,
    resume_epochs: int | None = None,
    changes: dict | None = None,
) -> Summary:
    """Train ``config`` into a new run (or continue ``run_name`` with ``resume``).

    ``changes`` are the options the user gave; with ``resume`` they must not
    change the run's recipe (only epochs, time budget, device and compile)."""
    device = select_device(config.device)
    dist = distributed.setup(device.type)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    try:
        picked: tuple[str, str] = ("", "")
        if dist.primary:
            try:
                picked = ("ok", pick_run(ws, config, run_name, resume).name)
            except InputError as err:
                picked = ("error", str(err))
            except PbnError as err:  # another process holds the run
                picked = ("locked", str(err))
        status, value = distributed.broadcast_object(dist, picked)
        if status == "error":
            raise InputError(value)
        if status == "locked":
            raise LockedError(value)
        run = Run(ws.runs / value)
        fresh = dist.primary and not run.folder.exists()
        lock = locking.hold(run.lock, f"run {run.name}") if dist.primary else contextlib.nullcontext()
        try:
            with lock:
                with stop_on_ctrl_c(progress) as position:
                    return _train(ws, config, run, resume, resume_epochs, device, dist, progress, position, changes)
        except BaseException:
            if fresh and not run.last.exists():  # failed before its first checkpoint: leave no empty run behind
                shutil.rmtree(run.folder, ignore_errors=True)
            raise
    finally:
        distributed.teardown(dist)


def _train(ws, config: TrainConfig, run: Run, resume: bool, resume_epochs, device, dist, progress, position,
           changes: dict | None = None) -> Summary:
    state = checkpoint.load(run.last) if resume else None
    if state is not None:
        check_unchanged(run.name, TrainConfig.from_dict(state["config"]), changes or {})
        config = TrainConfig.from_dict(state["config"])
        if resume_epochs:
            config.epochs = resume_epochs
        for key in ("max_minutes", "compile"):  # what --resume may change, besides --epochs and the device
            if (changes or {}).get(key) is not None:
                setattr(config, key, changes[key])
        config.device = str(device)
    torch.manual_seed(config.seed + dist.rank)
    data = CacheData(ws)
    if state is not None:
        checkpoint.check_cache(state, data.size, run.name)
    train_rows, val_rows = data.split("train"), data.split("val")
    if config.view != "resize" and config.model.input_size > data.size:
        raise InputError(f"--input-size {config.model.input_size} is larger than the cache's {data.size} px")
    if len(train_rows) < 2:
        raise InputError("the train split has fewer than two paintings; run `pbn split` on more data")

    model = Embedder(config.model, load_pretrained=state is None).to(device)
    if config.freeze_backbone:
        if isinstance(model.head, torch.nn.Identity):
            raise InputError(f"--freeze-backbone trains the head alone: give --embedding-dim (below the backbone's "
                             f"{model.feature_dim} features) so there is a head to train")
        model.backbone.requires_grad_(False)
    if state is None and model.kept is not None:
        frozen.center_kept(model, data, train_rows, config.model.input_size, config.view, device, progress=progress)
        progress.start(0, description="train", unit="steps")
    classes = np.unique(train_rows.labels)
    artist_loss = (ArtistLoss(model.dim, len(classes), config.class_scale, config.class_margin).to(device)
                   if uses_artist_loss(config) else None)
    tnet = TrainingNet(model, artist_loss, config.freeze_backbone)
    optimizer = _optimizer(config, tnet)
    start_epoch, start_step, best, history = 0, 0, -math.inf, []
    aug_state = None
    if state is not None:
        model.load_state_dict(state["model"])
        if artist_loss is not None:
            artist_loss.load_state_dict(state["artist_loss"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_step, best = state["epoch"], state["step"], state["best"]
        history, aug_state = list(state["history"]), state.get("aug_rng")
        progress.message(f"resuming run {run.name} at epoch {start_epoch + 1}" + (f", step {start_step}" if start_step else ""))
    net = tnet
    if dist.active:
        net = torch.nn.parallel.DistributedDataParallel(tnet, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    objective = Objective(config, net, tnet, classes, device)
    sampler = make_sampler(config.sampler, train_rows.labels, config.mode, config.batch_size, config.seed, config.paintings_per_artist)
    if dist.primary:
        run.folder.mkdir(parents=True, exist_ok=True)
        write_text(run.config, json.dumps({**config.to_dict(), "run": run.name, "data": data.fingerprints}, indent=2))
    val_features = None
    if config.freeze_backbone:
        size = config.model.input_size
        train_features = frozen.cached(run, model, data, train_rows, "train", size, config.view, True, device, progress)
        val_features = frozen.cached(run, model, data, val_rows, "val", size, config.view, False, device, progress)
        loader = FeatureLoader(train_features, device)
        progress.start(0, description="train", unit="steps")
    else:
        loader = Loader(data, train_rows.rows, device)

    def snapshot(epoch: int, step: int, aug_rng, loss_sum: float = 0.0, images: int = 0) -> dict:
        return {
            "loss_sum": loss_sum, "images": images,
            "config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "artist_loss": artist_loss.state_dict() if artist_loss is not None else {},
            "planned_epochs": schedule.planned_epochs, "epoch": epoch, "step": step, "best": best,
            "history": history, "aug_rng": aug_rng,
            "run": run.name, "cache_size": data.size,
        }

    def validate_now() -> dict:
        return validate(model, data, val_rows, config, device, val_features)

    steps_per_epoch = len(sampler.epoch(0, dist.rank, dist.world))
    # a budgeted run resumes on its plan until the first steps re-plan it; otherwise the recipe's epochs
    schedule = Schedule(config, steps_per_epoch, state.get("planned_epochs") if state and config.max_minutes else None)
    val_seconds = None
    pretrained = config.model.pretrained or bool(config.model.weights)
    if state is None and pretrained and dist.primary:  # what the pretrained network scores before any training
        t0 = time.monotonic()
        row = {"epoch": 0, "train_loss": float("nan"), **validate_now(), "lr": 0.0, "images_per_s": float("nan")}
        val_seconds = row["seconds"] = time.monotonic() - t0
        history.append(row)
        best = row["val_triplet_accuracy"] if not math.isnan(row["val_triplet_accuracy"]) else best
        checkpoint.save(run.start, snapshot(0, 0, None))
        checkpoint.save(run.best, snapshot(0, 0, None))
        progress.message(f"before training: val triplet acc {row['val_triplet_accuracy']:.3f}, "
                         f"val AUC {row['val_pair_auc']:.3f} (the pretrained network; `--checkpoint start`)")
    planner = Planner(schedule, config.max_minutes, config.epochs, start_epoch * steps_per_epoch + start_step,
                      val_seconds, len(val_rows) * views_per_painting(data.size, config.model.input_size, config.view),
                      max(1, config.batch_size * (3 if config.sampler == "random" and config.mode == "triplet" else
                                                  2 if config.sampler == "random" else 1)),
                      share=lambda value: distributed.broadcast_object(dist, value))
    progress.start(planner.bar_total())
    stopped = "finished"
    position.update(step=start_step, loss_sum=state.get("loss_sum", 0.0) if state else 0.0, images=state.get("images", 0) if state else 0)

    epoch = start_epoch
    generator = None
    try:
        while epoch < schedule.planned_epochs:
            batches = sampler.epoch(epoch, dist.rank, dist.world)
            generator = _aug_generator(config, epoch, dist.rank)
            if aug_state is not None:
                generator.set_state(aug_state)
                aug_state = None
            t0 = time.monotonic()
            try:
                loss, images = train_one_epoch(objective, optimizer, loader, batches, config, device, generator, progress,
                                               position, schedule, planner, epoch)
            except FloatingPointError as where:
                good = f"{run.last} (after epoch {epoch})" if run.last.exists() else "none was written yet"
                raise PbnError(
                    f"the training loss became NaN or infinite at epoch {epoch + 1}, {where}; stopped. "
                    f"The last good checkpoint is kept: {good}. Try a lower --lr"
                ) from None
            position.update(step=0, loss_sum=0.0, images=0)
            seconds = time.monotonic() - t0
            lr = optimizer.param_groups[0]["lr"]
            epoch += 1
            if dist.primary:
                row = {"epoch": epoch, "train_loss": loss, **validate_now(),
                       "lr": lr, "images_per_s": images * dist.world / seconds, "seconds": seconds}
                history.append(row)
                metric = row["val_triplet_accuracy"]
                improved = math.isnan(metric) or metric > best
                best = metric if improved and not math.isnan(metric) else best
                checkpoint.save(run.last, snapshot(epoch, 0, None))
                if improved:
                    checkpoint.save(run.best, snapshot(epoch, 0, None))
                frame = pd.DataFrame(history)
                write_manifest(run.history, frame, Record("history", {"run": run.name}))
                training_curves(frame, run.curves, f"{run.name}")
                progress.message(epoch_line(row))
            # every rank plans from the same figure, so all stop after the same epoch
            planned = distributed.broadcast_object(dist, (time.monotonic() - t0, planner.elapsed()))
            if planner.epoch_done(epoch, *planned):
                progress.start(planner.bar_total())
            distributed.barrier(dist)
            if config.max_minutes and planned[1] / 60 > config.max_minutes and epoch < schedule.planned_epochs:
                stopped = f"time budget of {config.max_minutes:g} minutes reached after epoch {epoch}"
                break
        if stopped == "finished" and config.max_minutes and schedule.planned_epochs < config.epochs:
            stopped = f"{schedule.planned_epochs} epochs planned to fit the {config.max_minutes:g}-minute budget"
    except KeyboardInterrupt:
        if dist.primary and position["step"] > 0:
            checkpoint.save(run.last, snapshot(epoch, position["step"], position.get("aug_rng"), position["loss_sum"], position["images"]))
        raise PbnError(
            f"interrupted; run {run.name} saved at epoch {epoch + 1}, step {position['step']}: "
            f"continue with `pbn train --run {run.name} --resume`"
        ) from None
    return Summary(run.name, epoch, best, stopped, pd.DataFrame(history))
