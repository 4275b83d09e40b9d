"""Per-sample losses, averaged over the batch (never distances averaged first).

Each loss takes a ``distance`` callable (Euclidean by default), so another
metric is one argument away.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance along the last axis (row-wise, or broadcast), with a gradient finite at 0."""
    return ((a - b).pow(2).sum(-1) + 1e-12).sqrt()


class ContrastiveLoss(nn.Module):
    """(1-Y)·½·D² + Y·½·max(0, m-D)², with Y=0 for the same artist and Y=1 for different ones."""

    def __init__(self, margin: float = 1.0, distance: Callable = euclidean):
        super().__init__()
        self.margin, self.distance = margin, distance

    def per_sample(self, x1: torch.Tensor, x2: torch.Tensor, different: torch.Tensor) -> torch.Tensor:
        if x1.shape != x2.shape or x1.shape[0] != different.shape[0]:
            raise ValueError(f"shapes do not match: {tuple(x1.shape)}, {tuple(x2.shape)}, {tuple(different.shape)}")
        return self.from_distances(self.distance(x1, x2), different)

    def from_distances(self, d: torch.Tensor, different: torch.Tensor) -> torch.Tensor:
        """The loss of pairs at distances ``d`` (the formula itself; mining applies it to mined pairs)."""
        y = different.to(d.dtype)
        return (1 - y) * 0.5 * d.pow(2) + y * 0.5 * torch.clamp(self.margin - d, min=0).pow(2)

    def forward(self, x1, x2, different):
        return self.per_sample(x1, x2, different).mean()


class TripletLoss(nn.Module):
    """max(0, d(a, p) - d(a, n) + m) for each triplet."""

    def __init__(self, margin: float = 0.2, distance: Callable = euclidean):
        super().__init__()
        self.margin, self.distance = margin, distance

    def per_sample(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not (a.shape == p.shape == n.shape):
            raise ValueError(f"shapes do not match: {tuple(a.shape)}, {tuple(p.shape)}, {tuple(n.shape)}")
        return self.from_distances(self.distance(a, p), self.distance(a, n))

    def from_distances(self, d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
        """The loss of triplets with these distances (the formula itself; mining applies it to mined triplets)."""
        return torch.clamp(d_ap - d_an + self.margin, min=0)

    def forward(self, a, p, n):
        return self.per_sample(a, p, n).mean()


class ArtistLoss(nn.Module):
    """Normalised softmax with an additive cosine margin over the training artists (CosFace).

    A neck (BatchNorm without a shift) in front of a cosine classifier, one
    proxy per artist: -log softmax(s·(cos θ_y - m), s·cos θ_j≠y). The neck
    lets the classifier have its own scale, so the embedding itself stays
    good for distances. The proxies exist only during training; the model
    that eval, compare and export use is the embedder alone.
    """

    def __init__(self, dim: int, n_artists: int, scale: float = 16.0, margin: float = 0.1):
        super().__init__()
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)
        self.proxies = nn.Parameter(torch.randn(n_artists, dim) / dim**0.5)
        self.scale, self.margin = scale, margin

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        """(B, artists) cosine of each neck-normalised feature with each artist's proxy."""
        z = torch.nn.functional.normalize(self.neck(features), dim=1)
        return z @ torch.nn.functional.normalize(self.proxies, dim=1).T

    def from_cosines(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The per-sample loss of these cosines (the formula itself)."""
        logits = self.scale * (cos - self.margin * torch.nn.functional.one_hot(labels, cos.shape[1]).to(cos.dtype))
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none")

    def per_sample(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.from_cosines(self.cosines(features), labels)

    def forward(self, features, labels):
        return self.per_sample(features, labels).mean()
