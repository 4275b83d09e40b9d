"""In-batch mining for P x K batches, on the device, without host syncs.

A miner selects, as a mask over the batch's distance matrix, which triplets
(anchor, positive, negative) or which pairs a loss is averaged over; the
loss itself is the loss class's own formula (``TripletLoss``,
``ContrastiveLoss``) applied to the selected distances, with the loss's own
distance. Masks instead of index lists mean no step waits for the GPU to
say how many triplets it found.
"""

from __future__ import annotations

import torch

from pbn_cli.networks.losses import ContrastiveLoss, TripletLoss, euclidean
from pbn_cli.networks.recipe import MINERS


def distance_matrix(emb: torch.Tensor, distance=euclidean) -> torch.Tensor:
    """``distance`` between all rows; Euclidean by one matrix product, with finite gradients at zero."""
    if distance is euclidean:
        sq = (emb * emb).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T
        return (d2.clamp(min=0.0) + 1e-12).sqrt()
    return distance(emb[:, None, :], emb[None, :, :])


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _check(miner: str) -> None:
    if miner not in MINERS:
        raise ValueError(f"unknown miner {miner!r}")


@torch.no_grad()
def triplet_mask(d: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> torch.Tensor:
    """(B, B, B) mask of the mined triplets [anchor, positive, negative].

    all: every valid triplet; semihard: those with d(a,p) < d(a,n) < d(a,p) + margin
    (every valid one when the batch has none); batch-hard: each anchor's
    farthest positive and closest negative.
    """
    _check(miner)
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    if miner == "batch-hard":
        far = torch.where(pos, d, torch.full_like(d, -1.0)).argmax(1)
        near = torch.where(neg, d, torch.full_like(d, float("inf"))).argmin(1)
        pick = torch.zeros_like(valid)
        anchors = torch.arange(len(labels), device=d.device)
        pick[anchors, far, near] = True
        return pick & valid
    if miner == "semihard":
        dap, dan = d[:, :, None], d[:, None, :]
        semi = valid & (dan > dap) & (dan < dap + margin)
        return torch.where(semi.any(), semi, valid)
    return valid


@torch.no_grad()
def pair_masks(d: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) (B, B) masks of the mined pairs.

    all: every pair once; semihard: negatives closer than the margin (all
    when none is); batch-hard: each painting's farthest positive and
    closest negative.
    """
    _check(miner)
    pos, neg = _masks(labels)
    if miner == "batch-hard":
        far = torch.where(pos, d, torch.full_like(d, -1.0)).argmax(1, keepdim=True)
        near = torch.where(neg, d, torch.full_like(d, float("inf"))).argmin(1, keepdim=True)
        return torch.zeros_like(pos).scatter_(1, far, True) & pos, torch.zeros_like(neg).scatter_(1, near, True) & neg
    upper = torch.ones_like(pos).triu(1)
    pos_mask, neg_mask = pos & upper, neg & upper
    if miner == "semihard":
        close = neg_mask & (d < margin)
        neg_mask = torch.where(close.any(), close, neg_mask)
    return pos_mask, neg_mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def mined_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, miner: str, loss: TripletLoss) -> torch.Tensor:
    """``loss`` per mined triplet, averaged over the mined triplets."""
    d = distance_matrix(emb, loss.distance)
    per = loss.from_distances(d[:, :, None], d[:, None, :])
    return _masked_mean(per, triplet_mask(d.detach(), labels, miner, loss.margin))


def mined_pair_loss(emb: torch.Tensor, labels: torch.Tensor, miner: str, loss: ContrastiveLoss) -> torch.Tensor:
    """``loss`` averaged over the mined positive pairs and, with equal weight, over the mined negative pairs."""
    d = distance_matrix(emb, loss.distance)
    pos_mask, neg_mask = pair_masks(d.detach(), labels, miner, loss.margin)
    same = loss.from_distances(d, torch.zeros_like(d))
    different = loss.from_distances(d, torch.ones_like(d))
    return 0.5 * (_masked_mean(same, pos_mask) + _masked_mean(different, neg_mask))
