"""The embedder: backbone, optional linear head, optional L2 normalisation, optional untouched pretrained copy.

One network; the 2 (pair) or 3 (triplet) branches of a Siamese network are
the same module applied to all their images in one batched forward, so the
weights are shared by construction.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pbn_cli.core.errors import InputError
from pbn_cli.networks.backbones import create_backbone
from pbn_cli.networks.recipe import ModelConfig


#: channels-last convolutions: 1.2-1.9x faster training and embedding on a CPU, as on a GPU
#: (tests/benchmarks/channels_last.py, docs/benchmarks.md)
MEMORY_FORMAT = torch.channels_last


class Embedder(nn.Module):
    """Images in [0, 1] -> normalised as the weights expect -> backbone -> head -> (L2-normalised) embedding."""

    def __init__(self, config: ModelConfig, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        self.backbone, features = create_backbone(config.backbone, config.input_size, config.pretrained and load_pretrained,
                                                  config.weights if load_pretrained else None)
        self.stages = stage_indices(self.backbone, config.levels, config.backbone)
        features += sum(self.backbone.feature_info[i]["num_chs"] for i in self.stages)
        dim = config.embedding_dim or features
        self.head = nn.Linear(features, dim) if dim != features else nn.Identity()
        if isinstance(self.head, nn.Linear) and config.pretrained_weights:
            # start near the pretrained features' own geometry: a random orthogonal projection keeps distances
            nn.init.orthogonal_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.feature_dim = features
        self.dim = dim  # what the head gives (and an artist classifier reads); the copy's features come after it
        # --keep-pretrained: the pretrained backbone as loaded, never trained; its features, centred on the training
        # paintings (set by training), join the embedding so what ImageNet knew of unseen artists is not forgotten
        self.kept = None
        if config.keep_pretrained > 0:
            self.kept = copy.deepcopy(self.backbone).requires_grad_(False).eval()
            self.register_buffer("kept_center", torch.zeros(features))
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        # weights loaded later keep this layout; digests read tensors in logical order
        self.to(memory_format=MEMORY_FORMAT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of each image seen as a painting of one view."""
        return self.paintings(x, 1)

    def paintings(self, views: torch.Tensor, v: int) -> torch.Tensor:
        """(B * V, 3, S, S) views, ``v`` of each painting in turn -> (B, D) painting embeddings."""
        tuned = self.tuned_paintings(views, v)
        return tuned if self.kept is None else self.combine(tuned, self.kept_means(views, v))

    def tuned_paintings(self, views: torch.Tensor, v: int) -> torch.Tensor:
        """The trained network's part: each view's embedding, their mean per painting, normalised as configured."""
        z = self.finish(self.unnormalized(views))
        return self.finish(z.reshape(-1, v, z.shape[1]).mean(1))

    def kept_means(self, views: torch.Tensor, v: int) -> torch.Tensor:
        """--keep-pretrained: the untouched copy's features, their mean per painting (what the store keeps of it)."""
        f = self.backbone_features(views, self.kept).float()
        return f.reshape(-1, v, f.shape[1]).mean(1)

    def combine(self, tuned: torch.Tensor, kept_means: torch.Tensor) -> torch.Tensor:
        """The embedding: the trained part beside the copy's centred, normalised mean features, weighted."""
        kept = F.normalize(kept_means.float() - self.kept_center, dim=1)
        return self.finish(torch.cat([tuned.float(), self.config.keep_pretrained * kept], 1))

    def train(self, mode: bool = True) -> Embedder:
        super().train(mode)
        if self.kept is not None:
            self.kept.eval()  # the pretrained copy never changes, its BatchNorm statistics included
        return self

    def backbone_features(self, x: torch.Tensor, backbone: nn.Module | None = None) -> torch.Tensor:
        """The backbone's (or its untouched copy's) pooled features of images in [0, 1]."""
        backbone = self.backbone if backbone is None else backbone
        x = x.contiguous(memory_format=MEMORY_FORMAT)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if not self.stages:
            return backbone(x)
        # what ImageNet features know of texture sits in the middle stages too: each level's pooled features,
        # L2-normalised so that each counts alike, side by side (docs/training.md, "Levels")
        last, middle = backbone.forward_intermediates(x, indices=self.stages, intermediates_only=False)
        parts = [backbone.forward_head(last, pre_logits=True), *(h.mean((2, 3)) for h in middle)]
        return torch.cat([F.normalize(p.float(), dim=1) for p in parts], 1)

    def unnormalized(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before L2 normalisation (what an artist classifier reads)."""
        return self.head(self.backbone_features(x)).float()

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) if self.config.normalize else z


def autocast(device: torch.device):
    """bf16 autocast on CUDA (where it is fast and safe for these networks); full precision elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def stage_indices(backbone: nn.Module, levels: int, name: str) -> list[int]:
    """The indices (timm's feature_info) of the last ``levels - 1`` stages; [] for the backbone's features alone."""
    if levels < 1:
        raise InputError(f"--levels must be at least 1, got {levels}")
    if levels == 1:
        return []
    info = getattr(backbone, "feature_info", None)
    if not hasattr(backbone, "forward_intermediates") or not isinstance(info, list) or not info:
        raise InputError(f"--levels {levels} needs a backbone with intermediate features (compact or timm:NAME); "
                         f"{name} has none here (use --levels 1)")
    if levels - 1 > len(info):
        raise InputError(f"--levels {levels}: {name} has {len(info)} stages, so at most --levels {len(info) + 1}")
    return list(range(len(info) - levels + 1, len(info)))
