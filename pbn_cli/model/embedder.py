"""The embedder: backbone, optional linear head, optional L2 normalisation.

One network; the 2 (pair) or 3 (triplet) branches of a Siamese network are
the same module applied to all their images in one batched forward, so the
weights are shared by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pbn_cli.model.backbones import create_backbone


@dataclass
class ModelConfig:
    backbone: str = "reference"  # reference | compact | resnet18 | resnet34 | resnet50
    input_size: int = 256  # side of the square crops the network sees
    embedding_dim: int | None = None  # None: the backbone's own features
    normalize: bool = True  # L2-normalise embeddings (the reference did not)
    pretrained: bool = False  # torchvision ImageNet weights

    def to_dict(self) -> dict:
        return asdict(self)


class Embedder(nn.Module):
    def __init__(self, config: ModelConfig, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        self.backbone, features = create_backbone(config.backbone, config.input_size, config.pretrained and load_pretrained)
        dim = config.embedding_dim or features
        self.head = nn.Linear(features, dim) if dim != features else nn.Identity()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.backbone(x)).float()
        return F.normalize(z, dim=1) if self.config.normalize else z
