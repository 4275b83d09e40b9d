"""The embedder: backbone, optional linear head, optional L2 normalisation.

One network; the 2 (pair) or 3 (triplet) branches of a Siamese network are
the same module applied to all their images in one batched forward, so the
weights are shared by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pbn_cli.model.backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone


@dataclass
class ModelConfig:
    backbone: str = "reference"  # reference | compact | a torchvision model | timm:NAME (`pbn backbones`)
    input_size: int = 256  # side of the square crops the network sees
    embedding_dim: int | None = None  # None: the backbone's own features
    normalize: bool = True  # L2-normalise embeddings (the reference did not)
    pretrained: bool = False  # the backbone's default ImageNet weights (torchvision's or timm's)
    weights: str | None = None  # a torchvision weights name (IMAGENET1K_V2) or a weights file
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # input normalisation, per channel,
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))  # as the weights were trained

    def to_dict(self) -> dict:
        return asdict(self)


class Embedder(nn.Module):
    """Images in [0, 1] -> normalised as the weights expect -> backbone -> head -> (L2-normalised) embedding."""

    def __init__(self, config: ModelConfig, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        self.backbone, features = create_backbone(config.backbone, config.input_size, config.pretrained and load_pretrained,
                                                  config.weights if load_pretrained else None)
        dim = config.embedding_dim or features
        self.head = nn.Linear(features, dim) if dim != features else nn.Identity()
        if isinstance(self.head, nn.Linear) and (config.pretrained or config.weights):
            # start near the pretrained features' own geometry: a random orthogonal projection keeps distances
            nn.init.orthogonal_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.feature_dim = features
        self.dim = dim
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.unnormalized(x))

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of images in [0, 1]."""
        return self.backbone((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def unnormalized(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before L2 normalisation (what an artist classifier reads)."""
        return self.head(self.backbone_features(x)).float()

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) if self.config.normalize else z
