"""Losses against hand-computed values; mining against naive loops."""

import itertools
import math

import pytest
import torch

from pbn_cli.model.losses import ContrastiveLoss, TripletLoss
from pbn_cli.model.mining import mine_pairs, mine_triplets


def test_contrastive_hand_computed():
    # 2-D points: same-artist pair at distance 3 (3-4-5 triangle halves), different at 1 and 4
    x1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    x2 = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 5.0]])
    different = torch.tensor([0.0, 1.0, 1.0])
    loss = ContrastiveLoss(margin=2.0)
    per = loss.per_sample(x1, x2, different)
    assert per.tolist() == pytest.approx([0.5 * 9, 0.5 * (2 - 1) ** 2, 0.0], abs=1e-5)
    assert loss(x1, x2, different).item() == pytest.approx((4.5 + 0.5) / 3, abs=1e-5)


def test_triplet_hand_computed_per_sample_not_batch_mean():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    n = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    loss = TripletLoss(margin=0.5)
    assert loss.per_sample(a, p, n).tolist() == pytest.approx([0.0, 2.5], abs=1e-5)
    # the reference averaged distances first: mean d(a,p)=2, mean d(a,n)=1.5 -> 1.0; per sample gives 1.25
    assert loss(a, p, n).item() == pytest.approx(1.25, abs=1e-5)


def test_unit_vectors_at_known_angles():
    def unit(deg):
        return torch.tensor([[math.cos(math.radians(deg)), math.sin(math.radians(deg))]])

    d90 = math.sqrt(2)
    assert TripletLoss(0.1).per_sample(unit(0), unit(90), unit(180)).item() == pytest.approx(max(0, d90 - 2 + 0.1), abs=1e-5)
    assert TripletLoss(1.0).per_sample(unit(0), unit(90), unit(180)).item() == pytest.approx(d90 - 2 + 1.0, abs=1e-5)


def test_shapes_are_checked():
    with pytest.raises(ValueError):
        TripletLoss()(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))


def _batch():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(12, 4, generator=g), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    return emb, labels


def test_all_triplets_equal_a_naive_loop():
    emb, labels = _batch()
    a, p, n = mine_triplets(emb, labels, "all", 0.2)
    naive = {(i, j, k) for i, j, k in itertools.permutations(range(12), 3) if labels[i] == labels[j] and labels[i] != labels[k]}
    naive |= {(i, j, k) for i, j in itertools.permutations(range(12), 2) for k in range(12) if labels[i] == labels[j] and labels[k] != labels[i]}
    assert set(zip(a.tolist(), p.tolist(), n.tolist())) == naive


def test_batch_hard_equals_a_naive_loop():
    emb, labels = _batch()
    a, p, n = mine_triplets(emb, labels, "batch-hard", 0.2)
    d = torch.cdist(emb, emb)
    for i, j, k in zip(a.tolist(), p.tolist(), n.tolist()):
        pos = [x for x in range(12) if labels[x] == labels[i] and x != i]
        neg = [x for x in range(12) if labels[x] != labels[i]]
        assert d[i, j] == max(d[i, x] for x in pos)
        assert d[i, k] == min(d[i, x] for x in neg)
    assert len(a) == 12


def test_semihard_condition():
    emb, labels = _batch()
    a, p, n = mine_triplets(emb, labels, "semihard", 0.5)
    d = torch.cdist(emb, emb)
    assert len(a) > 0
    assert ((d[a, n] > d[a, p]) & (d[a, n] < d[a, p] + 0.5)).all()


def test_pairs_are_balanced():
    emb, labels = _batch()
    for miner in ("all", "semihard", "batch-hard"):
        i, j, different = mine_pairs(emb, labels, miner, 0.5)
        assert (different == 0).sum() == (different == 1).sum() == 12
        assert ((labels[i] != labels[j]).float() == different).all()
