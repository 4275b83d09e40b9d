"""What one training step minimises: the mode's loss on the batch's embeddings, plus the artist loss.

``TrainingNet`` wraps the embedder and the artist classifier in one module,
so DistributedDataParallel sees (and synchronises) every parameter a step
uses. With ``--freeze-backbone`` its input is cached backbone features of
one of each painting's fixed views, not pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pbn_cli.networks.embedder import Embedder, autocast
from pbn_cli.networks.losses import ArtistLoss, ContrastiveLoss, TripletLoss
from pbn_cli.networks.mining import mined_pair_loss, mined_triplet_loss
from pbn_cli.networks.recipe import TrainConfig
from pbn_cli.networks.views import random_views


def metric_loss(config: TrainConfig):
    if config.mode == "triplet":
        return TripletLoss(config.triplet_margin)
    if config.mode == "pair":
        return ContrastiveLoss(config.pair_margin)
    return None  # proxy: the artist loss alone


def uses_artist_loss(config: TrainConfig) -> bool:
    return config.mode == "proxy" or config.id_weight > 0


def batch_loss(config: TrainConfig, loss_fn, emb: torch.Tensor, batch, device) -> torch.Tensor:
    """Mean per-sample pair/triplet loss of one batch's embeddings (branch-major for the random sampler)."""
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


class TrainingNet(nn.Module):
    """Embedder and (when the recipe has one) artist classifier: images or features -> (embeddings, artist loss)."""

    def __init__(self, model: Embedder, artist_loss: ArtistLoss | None, on_features: bool):
        super().__init__()
        self.model, self.artist_loss, self.on_features = model, artist_loss, on_features

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None = None):
        if self.on_features:
            z = self.model.head(x.float()).float()
        else:
            z = self.model.unnormalized(x)
        emb = self.model.finish(z)
        if self.artist_loss is None or classes is None:
            return emb, None
        return emb, self.artist_loss(z, classes)


def bn_eval(config: TrainConfig) -> bool:
    """Whether the backbone's BatchNorm statistics stay as trained: as asked, else when pretrained and batches are small."""
    if config.bn_eval is not None:
        return config.bn_eval
    return config.model.pretrained_weights and config.batch_size < 64


def set_train_mode(net: TrainingNet, config: TrainConfig) -> None:
    net.train()
    model = net.model
    if config.freeze_backbone:
        model.backbone.eval()
    elif bn_eval(config):
        for m in model.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class Objective:
    """The loss of one batch, from its uint8 images (or cached features) on the device."""

    def __init__(self, config: TrainConfig, net: nn.Module, training_net: TrainingNet, classes: np.ndarray,
                 device: torch.device):
        self.config, self.net, self.training_net, self.device = config, net, training_net, device
        self.loss_fn = metric_loss(config)
        self.classes = classes  # the training artists' codes, sorted: artist code -> classifier row

    def inputs(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        if c.freeze_backbone:  # (B, V, F) features: one of each painting's views, drawn from the generator
            pick = torch.randint(x.shape[1], (x.shape[0],), generator=generator).to(x.device)
            return x[torch.arange(x.shape[0], device=x.device), pick]
        return random_views(x, c.model.input_size, c.model.view, generator, c.hflip, c.vflip, c.rotation, c.translate,
                            c.zoom)

    def __call__(self, batch, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        classes = None
        if uses_artist_loss(c):
            classes = torch.from_numpy(np.searchsorted(self.classes, batch.labels)).to(self.device)
        inputs = self.inputs(x, generator)
        with autocast(self.device):
            emb, artist = self.net(inputs, classes)
        if c.mode == "proxy":
            return artist
        loss = batch_loss(c, self.loss_fn, emb.float(), batch, self.device)
        return loss + c.id_weight * artist if artist is not None else loss
