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
