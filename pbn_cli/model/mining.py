"""In-batch mining for P x K batches, on the device, without host syncs.

The mined losses work on masks over the batch's distance matrix rather than
on index lists, so no step waits for the GPU to say how many triplets it
found. Losses are per triplet (pair) and averaged over the mined ones.
"""

from __future__ import annotations

import torch

MINERS = ("all", "semihard", "batch-hard")


def distance_matrix(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between all rows, with finite gradients at zero distance."""
    sq = (emb * emb).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T
    return (d2.clamp(min=0.0) + 1e-12).sqrt()


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def mined_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> torch.Tensor:
    """Mean of max(0, d(a,p) - d(a,n) + margin) over the mined triplets.

    all: every valid triplet; semihard: those with d(a,p) < d(a,n) < d(a,p) + margin
    (every valid one when the batch has none); batch-hard: each anchor's
    farthest positive and closest negative.
    """
    d = distance_matrix(emb)
    pos, neg = _masks(labels)
    if miner == "batch-hard":
        dp = torch.where(pos, d, torch.full_like(d, -1.0)).max(1).values
        dn = torch.where(neg, d, torch.full_like(d, float("inf"))).min(1).values
        valid = pos.any(1) & neg.any(1)
        per = torch.clamp(dp - torch.where(valid, dn, dp) + margin, min=0)
        return _masked_mean(per, valid)
    valid = pos[:, :, None] & neg[:, None, :]
    dap, dan = d[:, :, None], d[:, None, :]
    per = torch.clamp(dap - dan + margin, min=0)
    if miner == "semihard":
        with torch.no_grad():
            semi = valid & (dan > dap) & (dan < dap + margin)
            valid = torch.where(semi.any(), semi, valid)
    elif miner != "all":
        raise ValueError(f"unknown miner {miner!r}")
    return _masked_mean(per, valid)


def mined_pair_loss(emb: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> torch.Tensor:
    """Contrastive loss, half from the mined positive pairs and half from the mined negative pairs.

    all: every pair; semihard: negatives closer than the margin (all when
    none is); batch-hard: each painting's farthest positive and closest
    negative.
    """
    d = distance_matrix(emb)
    pos, neg = _masks(labels)
    upper = torch.ones_like(pos).triu(1)
    pos_loss = 0.5 * d.pow(2)
    neg_loss = 0.5 * torch.clamp(margin - d, min=0).pow(2)
    if miner == "batch-hard":
        far = torch.where(pos, d, torch.full_like(d, -1.0)).argmax(1, keepdim=True)
        near = torch.where(neg, d, torch.full_like(d, float("inf"))).argmin(1, keepdim=True)
        pos_mask = torch.zeros_like(pos).scatter_(1, far, True) & pos
        neg_mask = torch.zeros_like(neg).scatter_(1, near, True) & neg
    else:
        pos_mask, neg_mask = pos & upper, neg & upper
        if miner == "semihard":
            with torch.no_grad():
                close = neg_mask & (d < margin)
                neg_mask = torch.where(close.any(), close, neg_mask)
        elif miner != "all":
            raise ValueError(f"unknown miner {miner!r}")
    return 0.5 * (_masked_mean(pos_loss, pos_mask) + _masked_mean(neg_loss, neg_mask))
