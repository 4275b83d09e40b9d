"""In-batch mining for P x K batches, on the device.

Given the embeddings and artist labels of one batch, return index tensors
of the triplets (anchor, positive, negative) or pairs to put in the loss.
"""

from __future__ import annotations

import torch

MINERS = ("all", "semihard", "batch-hard")


def _pairwise(emb: torch.Tensor) -> torch.Tensor:
    return torch.cdist(emb.float(), emb.float())


def mine_triplets(emb: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> tuple[torch.Tensor, ...]:
    """Indices (a, p, n) of the mined triplets.

    all: every valid triplet; semihard: those with d(a,p) < d(a,n) < d(a,p) + margin
    (all valid ones when none is); batch-hard: for each anchor its farthest
    positive and closest negative.
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    with torch.no_grad():
        d = _pairwise(emb.detach())
    if miner == "batch-hard":
        a = torch.nonzero(pos_mask.any(1) & neg_mask.any(1)).squeeze(1)
        big = torch.finfo(d.dtype).max
        p = torch.where(pos_mask, d, torch.full_like(d, -1.0))[a].argmax(1)
        n = torch.where(neg_mask, d, torch.full_like(d, big))[a].argmin(1)
        return a, p, n
    valid = pos_mask[:, :, None] & neg_mask[:, None, :]
    if miner == "semihard":
        dap, dan = d[:, :, None], d[:, None, :]
        semi = valid & (dan > dap) & (dan < dap + margin)
        if semi.any():
            valid = semi
    elif miner != "all":
        raise ValueError(f"unknown miner {miner!r}")
    a, p, n = torch.nonzero(valid, as_tuple=True)
    return a, p, n


def mine_pairs(emb: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> tuple[torch.Tensor, ...]:
    """Indices (i, j) and 'different' flags of the mined pairs, as many negatives as positives.

    all: every positive pair, and as many negative pairs (the hardest first
    for semihard / batch-hard, spread over the batch for all).
    """
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(same), 1)
    pi, pj = torch.nonzero(same & upper, as_tuple=True)
    ni, nj = torch.nonzero(~same & upper, as_tuple=True)
    k = min(len(pi), len(ni))
    if miner == "all":
        step = max(1, len(ni) // max(k, 1))
        pick = torch.arange(0, len(ni), step, device=labels.device)[:k]
    else:
        with torch.no_grad():
            d = _pairwise(emb.detach())[ni, nj]
        if miner == "semihard":
            d = torch.where(d < margin, d, d + 1e6)  # violating negatives first
        pick = torch.argsort(d)[:k]
    i = torch.cat([pi, ni[pick]])
    j = torch.cat([pj, nj[pick]])
    different = torch.cat([torch.zeros(len(pi), device=labels.device), torch.ones(k, device=labels.device)])
    return i, j, different
