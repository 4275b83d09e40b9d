"""Losses against hand-computed values; mining against naive loops."""

import itertools
import math

import pytest
import torch

from pbn_cli.networks.losses import ContrastiveLoss, TripletLoss
from pbn_cli.networks.mining import (
    distance_matrix,
    mined_pair_loss,
    mined_triplet_loss,
    pair_masks,
    triplet_mask,
)


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


def _naive_triplets(emb, labels, keep):
    d = torch.cdist(emb.double(), emb.double()).tolist()
    losses = []
    for a, p, n in itertools.product(range(len(labels)), repeat=3):
        if a != p and labels[a] == labels[p] and labels[n] != labels[a] and keep(d, a, p, n):
            losses.append(max(0.0, d[a][p] - d[a][n] + 0.2))
    return sum(losses) / len(losses)


def test_all_triplets_equal_a_naive_loop():
    emb, labels = _batch()
    expected = _naive_triplets(emb, labels, lambda d, a, p, n: True)
    assert mined_triplet_loss(emb, labels, "all", TripletLoss(0.2)).item() == pytest.approx(expected, abs=1e-5)


def test_semihard_equals_a_naive_loop():
    emb, labels = _batch()
    expected = _naive_triplets(emb, labels, lambda d, a, p, n: d[a][p] < d[a][n] < d[a][p] + 0.2)
    assert mined_triplet_loss(emb, labels, "semihard", TripletLoss(0.2)).item() == pytest.approx(expected, abs=1e-5)


def test_batch_hard_equals_a_naive_loop():
    emb, labels = _batch()
    d = torch.cdist(emb.double(), emb.double()).tolist()
    per = []
    for a in range(12):
        pos = max(d[a][x] for x in range(12) if labels[x] == labels[a] and x != a)
        neg = min(d[a][x] for x in range(12) if labels[x] != labels[a])
        per.append(max(0.0, pos - neg + 0.2))
    assert mined_triplet_loss(emb, labels, "batch-hard", TripletLoss(0.2)).item() == pytest.approx(sum(per) / 12, abs=1e-5)


def test_mined_pair_loss_is_half_positive_half_negative():
    emb, labels = _batch()
    d = torch.cdist(emb.double(), emb.double()).tolist()
    pos = [0.5 * d[i][j] ** 2 for i, j in itertools.combinations(range(12), 2) if labels[i] == labels[j]]
    neg = [0.5 * max(0.0, 0.5 - d[i][j]) ** 2 for i, j in itertools.combinations(range(12), 2) if labels[i] != labels[j]]
    expected = 0.5 * (sum(pos) / len(pos) + sum(neg) / len(neg))
    assert mined_pair_loss(emb, labels, "all", ContrastiveLoss(0.5)).item() == pytest.approx(expected, abs=1e-5)
    for miner in ("semihard", "batch-hard"):
        assert torch.isfinite(mined_pair_loss(emb, labels, miner, ContrastiveLoss(0.5)))


def test_mined_losses_have_finite_gradients_with_duplicate_embeddings():
    emb = torch.zeros(8, 4, requires_grad=True)  # every distance 0: the sqrt must not give NaN
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for loss in (mined_triplet_loss(emb, labels, "semihard", TripletLoss(0.2)), mined_pair_loss(emb, labels, "all", ContrastiveLoss(0.5))):
        loss.backward()
        assert torch.isfinite(emb.grad).all()


def _selected(mask) -> set:
    return {tuple(int(i) for i in idx) for idx in mask.nonzero()}


def _naive_triplet_selection(d, labels, miner, margin):
    n = len(labels)
    valid = {(a, p, q) for a, p, q in itertools.product(range(n), repeat=3)
             if a != p and labels[a] == labels[p] and labels[q] != labels[a]}
    if miner == "all":
        return valid
    if miner == "semihard":
        semi = {(a, p, q) for a, p, q in valid if d[a][p] < d[a][q] < d[a][p] + margin}
        return semi or valid
    picked = set()
    for a in range(n):
        pos = [x for x in range(n) if x != a and labels[x] == labels[a]]
        neg = [x for x in range(n) if labels[x] != labels[a]]
        picked.add((a, max(pos, key=lambda x: d[a][x]), min(neg, key=lambda x: d[a][x])))
    return picked


@pytest.mark.parametrize("miner", ["all", "semihard", "batch-hard"])
@pytest.mark.parametrize("margin", [0.05, 0.3, 5.0])
def test_triplet_miners_select_what_a_naive_loop_selects(miner, margin):
    emb, labels = _batch()
    d = distance_matrix(emb.double())
    expected = _naive_triplet_selection(d.tolist(), labels.tolist(), miner, margin)
    assert _selected(triplet_mask(d, labels, miner, margin)) == expected


def test_semihard_falls_back_to_every_valid_triplet_when_none_is_semihard():
    emb, labels = _batch()
    d = distance_matrix(emb.double())
    assert _selected(triplet_mask(d, labels, "semihard", 1e-9)) == _selected(triplet_mask(d, labels, "all", 1e-9))


@pytest.mark.parametrize("miner", ["all", "semihard", "batch-hard"])
def test_pair_miners_select_what_a_naive_loop_selects(miner):
    emb, labels = _batch()
    d = distance_matrix(emb.double())
    dl, lab, n, margin = d.tolist(), labels.tolist(), len(labels), 0.9
    if miner == "batch-hard":
        pos = {(a, max((x for x in range(n) if x != a and lab[x] == lab[a]), key=lambda x: dl[a][x])) for a in range(n)}
        neg = {(a, min((x for x in range(n) if lab[x] != lab[a]), key=lambda x: dl[a][x])) for a in range(n)}
    else:
        pos = {(i, j) for i, j in itertools.combinations(range(n), 2) if lab[i] == lab[j]}
        neg = {(i, j) for i, j in itertools.combinations(range(n), 2) if lab[i] != lab[j]}
        if miner == "semihard":
            neg = {(i, j) for i, j in neg if dl[i][j] < margin} or neg
    got_pos, got_neg = pair_masks(d, labels, miner, margin)
    assert (_selected(got_pos), _selected(got_neg)) == (pos, neg)
    assert 0 < len(neg) < n * n  # the margin really selects


def test_mining_uses_the_loss_classes_formula_and_distance():
    """A loss with another distance changes the mined loss: mining does not rewrite the formula."""
    emb, labels = _batch()

    def manhattan(a, b):
        return (a - b).abs().sum(-1)

    loss = TripletLoss(0.2, distance=manhattan)
    d = distance_matrix(emb, manhattan)
    mask = triplet_mask(d, labels, "all", 0.2)
    a, p, q = mask.nonzero().T
    expected = loss.per_sample(emb[a], emb[p], emb[q]).mean()
    assert mined_triplet_loss(emb, labels, "all", loss).item() == pytest.approx(expected.item(), abs=1e-5)


def test_artist_loss_hand_computed():
    from pbn_cli.networks.losses import ArtistLoss

    loss = ArtistLoss(dim=2, n_artists=2, scale=4.0, margin=0.5)
    # cosines given directly: the formula is -log softmax(s(cos_y - m), s cos_other)
    cos = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1])
    per = loss.from_cosines(cos, labels)
    first = -math.log(math.exp(4 * 0.5) / (math.exp(4 * 0.5) + math.exp(0.0)))
    second = -math.log(math.exp(4 * 0.3) / (math.exp(4 * 0.3) + math.exp(4 * 0.6)))
    assert per.tolist() == pytest.approx([first, second], abs=1e-5)
    # the cosines come from neck-normalised features against the artists' proxies
    loss.eval()  # the neck's running statistics start at mean 0, variance 1: the identity
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    feats = torch.tensor([[3.0, 0.0], [3.0, 4.0]])
    assert torch.allclose(loss.cosines(feats), cos, atol=1e-3)
    assert loss.per_sample(feats, labels).tolist() == pytest.approx([first, second], abs=1e-3)


def test_artist_loss_gradient_moves_a_painting_towards_its_artist():
    from pbn_cli.networks.losses import ArtistLoss

    torch.manual_seed(0)
    loss = ArtistLoss(dim=8, n_artists=3)
    feats = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    opt = torch.optim.SGD([feats, *loss.parameters()], lr=0.5)
    first = loss(feats, labels).item()
    for _ in range(30):
        opt.zero_grad()
        loss(feats, labels).backward()
        opt.step()
    assert loss(feats, labels).item() < 0.5 * first
