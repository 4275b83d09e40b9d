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
from pbn_cli.model.losses import ContrastiveLoss, TripletLoss
from pbn_cli.model.mining import mined_pair_loss, mined_triplet_loss
from pbn_cli.model.recipe import TrainConfig
from pbn_cli.model.views import random_views
from pbn_cli.training import distributed
from pbn_cli.training.batches import Batch, Loader, make_sampler
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


def _losses(config: TrainConfig):
    if config.mode == "triplet":
        return TripletLoss(config.triplet_margin)
    return ContrastiveLoss(config.pair_margin)


def batch_loss(config: TrainConfig, loss_fn, emb: torch.Tensor, batch: Batch, device) -> torch.Tensor:
    """Mean per-sample loss of one batch's embeddings (branch-major for the random sampler)."""
    if config.sampler == "random":
        if config.mode == "triplet":
            a, p, n = emb.reshape(3, -1, emb.shape[1])
            return loss_fn(a, p, n)
        x1, x2 = emb.reshape(2, -1, emb.shape[1])
        return loss_fn(x1, x2, torch.from_numpy(batch.different).to(device))
    labels = torch.from_numpy(batch.labels).to(device, non_blocking=True)
    if config.mode == "triplet":
        return mined_triplet_loss(emb, labels, config.miner, loss_fn)
    return mined_pair_loss(emb, labels, config.miner, loss_fn)


def validate(model, data: CacheData, rows: SplitRows, config: TrainConfig, device) -> dict:
    """Triplet accuracy and pair AUC on ``rows`` (docs/metrics.md), seeded."""
    if len(rows) < 3 or len(np.unique(rows.labels)) < 2:
        return {"val_triplet_accuracy": float("nan"), "val_pair_auc": float("nan")}
    emb = embed_images(
        model, lambda idx: data.gather(rows.rows[idx]), len(rows), config.model.input_size,
        config.view, config.model.normalize, device,
    )
    triplets = metrics.sample_triplets(rows.labels, config.val_triplets, config.seed)
    auc, _, _ = metrics.pair_auc(emb, rows.labels, config.seed)
    return {"val_triplet_accuracy": metrics.triplet_accuracy(emb, triplets), "val_pair_auc": auc}


def _aug_generator(config: TrainConfig, epoch: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((config.seed * 1_000_003 + epoch) * 101 + rank) % (2**63))


def train_one_epoch(net, optimizer, loss_fn, loader, batches, config, device, generator, progress, position):
    """Train on ``batches`` from ``position["step"]``; returns (mean loss, images).

    ``position`` carries the step reached, the loss summed so far and the
    augmentation generator's state, so an interrupted epoch can be saved and
    finished later with exactly the same result.
    """
    net.train()
    start = position.get("step", 0)
    total = torch.as_tensor(position.get("loss_sum", 0.0), dtype=torch.float64, device=device)
    images = position.get("images", 0)
    shown = start
    for step, (batch, x) in enumerate(loader(batches[start:]), start=start):
        views = random_views(
            x, config.model.input_size, config.view, generator, config.hflip, config.vflip,
            config.rotation, config.translate, config.zoom,
        )
        if device.type == "cuda":
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            emb = net(views)
        loss = batch_loss(config, loss_fn, emb.float(), batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        images += len(batch.images)
        position.update(step=step + 1, images=images, aug_rng=generator.get_state())
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


def _optimizer(config: TrainConfig, params):
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer):
    if config.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones, config.gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


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
        config.device = str(device)
    torch.manual_seed(config.seed + dist.rank)
    data = CacheData(ws)
    if state is not None:
        checkpoint.check_cache(state, data.size, run.name)
    train_rows, val_rows = data.split("train"), data.split("val")
    if config.view == "crop" and config.model.input_size > data.size:
        raise InputError(f"--input-size {config.model.input_size} is larger than the cache's {data.size} px")
    if len(train_rows) < 2:
        raise InputError("the train split has fewer than two paintings; run `pbn split` on more data")

    model = Embedder(config.model, load_pretrained=state is None).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(config, model.parameters())
    scheduler = _scheduler(config, optimizer)
    start_epoch, start_step, best, history = 0, 0, -math.inf, []
    aug_state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            scheduler.T_max = config.epochs  # --epochs may extend a resumed run
        start_epoch, start_step, best = state["epoch"], state["step"], state["best"]
        history, aug_state = list(state["history"]), state.get("aug_rng")
        progress.message(f"resuming run {run.name} at epoch {start_epoch + 1}" + (f", step {start_step}" if start_step else ""))
    net = model
    if dist.active:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    loss_fn = _losses(config)
    sampler = make_sampler(config.sampler, train_rows.labels, config.mode, config.batch_size, config.seed, config.paintings_per_artist)
    loader = Loader(data, train_rows.rows, device)
    if dist.primary:
        run.folder.mkdir(parents=True, exist_ok=True)
        write_text(run.config, json.dumps({**config.to_dict(), "run": run.name, "data": data.fingerprints}, indent=2))

    steps_per_epoch = len(sampler.epoch(0, dist.rank, dist.world))
    progress.start(steps_per_epoch * (config.epochs - start_epoch) - start_step)
    started = time.monotonic()
    stopped = "finished"
    position.update(step=start_step, loss_sum=state.get("loss_sum", 0.0) if state else 0.0, images=state.get("images", 0) if state else 0)

    def snapshot(epoch: int, step: int, aug_rng, loss_sum: float = 0.0, images: int = 0) -> dict:
        return {
            "loss_sum": loss_sum, "images": images,
            "config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "best": best,
            "history": history, "aug_rng": aug_rng,
            "run": run.name, "cache_size": data.size,
        }

    epoch = start_epoch
    generator = None
    try:
        for epoch in range(start_epoch, config.epochs):
            batches = sampler.epoch(epoch, dist.rank, dist.world)
            generator = _aug_generator(config, epoch, dist.rank)
            if aug_state is not None:
                generator.set_state(aug_state)
                aug_state = None
            t0 = time.monotonic()
            try:
                loss, images = train_one_epoch(net, optimizer, loss_fn, loader, batches, config, device, generator, progress, position)
            except FloatingPointError as where:
                good = f"{run.last} (after epoch {epoch})" if run.last.exists() else "none was written yet"
                raise PbnError(
                    f"the training loss became NaN or infinite at epoch {epoch + 1}, {where}; stopped. "
                    f"The last good checkpoint is kept: {good}. Try a lower --lr"
                ) from None
            position.update(step=0, loss_sum=0.0, images=0)
            seconds = time.monotonic() - t0
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            if dist.primary:
                row = {"epoch": epoch + 1, "train_loss": loss, **validate(model, data, val_rows, config, device),
                       "lr": lr, "images_per_s": images * dist.world / seconds, "seconds": seconds}
                history.append(row)
                metric = row["val_triplet_accuracy"]
                improved = math.isnan(metric) or metric > best
                best = metric if improved and not math.isnan(metric) else best
                checkpoint.save(run.last, snapshot(epoch + 1, 0, None))
                if improved:
                    checkpoint.save(run.best, snapshot(epoch + 1, 0, None))
                frame = pd.DataFrame(history)
                write_manifest(run.history, frame, Record("history", {"run": run.name}))
                training_curves(frame, run.curves, f"{run.name}")
                progress.message(epoch_line(row))
            distributed.barrier(dist)
            if config.max_minutes and (time.monotonic() - started) / 60 > config.max_minutes and epoch + 1 < config.epochs:
                stopped = f"time budget of {config.max_minutes:g} minutes reached after epoch {epoch + 1}"
                break
    except KeyboardInterrupt:
        if dist.primary and position["step"] > 0:
            checkpoint.save(run.last, snapshot(epoch, position["step"], position.get("aug_rng"), position["loss_sum"], position["images"]))
        raise PbnError(
            f"interrupted; run {run.name} saved at epoch {epoch + 1}, step {position['step']}: "
            f"continue with `pbn train --run {run.name} --resume`"
        ) from None
    return Summary(run.name, len(history), best, stopped, pd.DataFrame(history))
